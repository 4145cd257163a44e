"""scripts/install_promtool: a no-op where promtool is, a loud failure where it cannot be
installed (the alert rules' tests need it, so a missing promtool must not pass quietly)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_promtool"


def _path_without(bin_dir: Path, *left_out: str) -> str:
    """A PATH of one directory holding every command on this PATH but `left_out`."""
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for command in Path(directory).iterdir():
            link = bin_dir / command.name
            if command.name not in left_out and not link.is_symlink():
                link.symlink_to(command)
    return str(bin_dir)


def _install(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (the repo's own script)
        [str(SCRIPT)],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_with_promtool_on_the_path_it_installs_nothing(tmp_path: Path) -> None:
    # No apt-get: had it tried to install, it would have failed.
    run = _install(_path_without(tmp_path / "bin", "apt-get"))

    assert (run.returncode, run.stderr) == (0, "")


def test_without_promtool_or_a_way_to_install_it_it_fails_naming_promtool(
    tmp_path: Path,
) -> None:
    run = _install(_path_without(tmp_path / "bin", "promtool", "apt-get"))

    assert run.returncode != 0
    assert run.stderr.startswith("error: promtool not found"), run.stderr
