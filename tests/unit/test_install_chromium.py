"""scripts/install_chromium: a no-op where Chromium is, a loud failure where it cannot be
installed (the session page's browser tests need it, so a missing browser must not pass
quietly)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_chromium"


def _path_of_only(bin_dir: Path, *commands: str) -> str:
    """A PATH of one directory holding only `commands` (so no apt-get)."""
    bin_dir.mkdir()
    for command in commands:
        found = shutil.which(command)
        assert found is not None, command
        (bin_dir / command).symlink_to(found)
    return str(bin_dir)


def _install(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {key: value for key, value in os.environ.items() if key != "CHROMIUM"}
    return subprocess.run(  # noqa: S603 (the repo's own script)
        [str(SCRIPT)],
        env={**inherited, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_with_chromium_installed_it_installs_nothing(tmp_path: Path) -> None:
    # No apt-get on PATH: had it tried to install, it would have failed. The default path,
    # /usr/bin/chromium, is there: `make bootstrap` put it there before the tests run.
    run = _install(_path_of_only(tmp_path / "bin", "bash", "dirname"))

    assert (run.returncode, run.stderr) == (0, "")


def test_without_chromium_or_a_way_to_install_it_it_fails_naming_chromium(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-chromium"

    run = _install(_path_of_only(tmp_path / "bin", "bash", "dirname"), CHROMIUM=str(missing))

    assert run.returncode != 0
    assert run.stderr.startswith(f"error: {missing} not found"), run.stderr
