"""scripts/install_pgbouncer: a no-op where pgbouncer is (the bootstrap runs it every time)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.unit.test_install_promtool import _path_without

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_pgbouncer"


def test_with_pgbouncer_installed_it_installs_nothing(tmp_path: Path) -> None:
    # No apt-get: had it tried to install, it would have failed.
    path = _path_without(tmp_path / "bin", "apt-get")

    run = subprocess.run(  # noqa: S603 (the repo's own script)
        [str(SCRIPT)],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (run.returncode, run.stderr) == (0, "")
