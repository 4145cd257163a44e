"""`make mutation`: mutmut over the critical logic ([tool.mutmut] in pyproject.toml).

Every mutant's pytest run would otherwise start its own embedded PostgreSQL (the `pg_admin_dsn`
fixture); one server for the whole run, given through AUTHSVC_TEST_DATABASE_URL, saves that.
Starts from an empty mutants/, so the score printed is this tree's. Prints the kill rate and
each survivor; docs/mutation.md says what the last run's survivors were. Arguments are
mutant-name globs that replace DEFAULT_MUTANTS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from authsvc.embedded_db import start_embedded_postgres

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = Path(sys.executable).parent / "mutmut"

# All of the files in [tool.mutmut] only_mutate is some 1,600 mutants, two hours on two cores;
# these are the decisions (grace window, reuse, expiry, paging, refresh timing) in ~20 minutes.
DEFAULT_MUTANTS = [
    "authsvc.domain.sessions.xǁSessionServiceǁrefresh__mutmut_*",
    "authsvc.domain.sessions.xǁSessionServiceǁ_check_presented__mutmut_*",
    "authsvc.domain.sessions.xǁSessionServiceǁlogout_with_refresh_token__mutmut_*",
    "authsvc.domain.access_tokens.xǁAccessTokensǁverify__mutmut_*",
    "authsvc.store.sessions.xǁPgSessionStoreǁlist_live_sessions__mutmut_*",
    "authsvc_client._manager.xǁTokenManagerǁ_is_due__mutmut_*",
    "authsvc_client._manager.xǁTokenManagerǁ_end__mutmut_*",
]
# mutmut names a module by its path under the tree's root (only a leading src/ is dropped),
# and the client's is clients/python/src/authsvc_client: a link at the root gives mutants/
# the package under its import name, so its mutants are the ones the tests import.
CLIENT_LINK = Path("authsvc_client")
CLIENT_PACKAGE = Path("clients/python/src/authsvc_client")


def mutmut(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MUTMUT, *args], text=True, **options)  # noqa: S603 (our own venv's)


def main() -> int:
    os.chdir(ROOT)
    shutil.rmtree("mutants", ignore_errors=True)
    CLIENT_LINK.unlink(missing_ok=True)
    CLIENT_LINK.symlink_to(CLIENT_PACKAGE, target_is_directory=True)
    try:
        return _run_and_report(sys.argv[1:] or DEFAULT_MUTANTS)
    finally:
        CLIENT_LINK.unlink()


def _run_and_report(names: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="authsvc-mutation-pg-") as data_dir:
        embedded = start_embedded_postgres(Path(data_dir))
        try:
            env = {**os.environ, "AUTHSVC_TEST_DATABASE_URL": embedded.admin_dsn()}
            # One mutant per core.
            children = str(os.cpu_count() or 2)
            run = mutmut("run", "--max-children", children, *names, env=env, check=False)
        finally:
            embedded.stop()
    if run.returncode:
        return run.returncode
    mutmut("export-cicd-stats", check=True, stdout=subprocess.DEVNULL)
    stats = json.loads(Path("mutants/mutmut-cicd-stats.json").read_text())
    for line in mutmut("results", check=True, capture_output=True).stdout.splitlines():
        if line.endswith(": survived"):
            print(line.strip())
    # A mutant no selected test reaches is a miss too, not a mutant left out.
    tried = sum(stats[key] for key in ("killed", "survived", "timeout", "suspicious", "no_tests"))
    caught = stats["killed"] + stats["timeout"]
    print(
        f"mutation: {caught} of {tried} mutants killed ({100 * caught / max(tried, 1):.1f}%);"
        f" {stats['survived']} survived, {stats['no_tests']} reached by no selected test"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
