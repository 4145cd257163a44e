"""`make run` on a machine without npm: serving needs Python only (npm builds buf and the
Node client, which the checks need, not the server).

The checkout is a copy of this one's tracked files with no node_modules, as a fresh clone
has, and this checkout's .venv (its stamp matches, so nothing is installed: the test stays
fast and offline)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Bounds the make run; an upper bound that only a hang reaches.
WAIT = 120


def _path_without_npm(bin_dir: Path) -> str:
    """A PATH of one directory holding every command on this PATH but npm and npx."""
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for command in Path(directory).iterdir():
            link = bin_dir / command.name
            if command.name not in ("npm", "npx") and not link.is_symlink():
                link.symlink_to(command)
    return str(bin_dir)


def _clone_without_node_modules(checkout: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"],  # noqa: S607 (whichever git is on PATH)
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    (checkout / ".venv").symlink_to(ROOT / ".venv")


def test_make_run_without_npm_gets_as_far_as_serve(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    _clone_without_node_modules(checkout)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "MAKE"))}
    # A port serve refuses at once: reaching that refusal means the bootstrap passed.
    env.update(PATH=_path_without_npm(tmp_path / "bin"), AUTHSVC_PORT="not-a-port")

    run = subprocess.run(
        ["make", "run"],  # noqa: S607 (make from the PATH without npm)
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )

    assert "npm" not in run.stderr
    assert "authsvc: configuration error: AUTHSVC_PORT" in run.stderr, run.stderr


def test_first_bootstrap_says_what_it_installs_before_the_wait(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    _clone_without_node_modules(checkout)
    (checkout / ".venv").unlink()  # a fresh clone: no virtualenv yet
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHSVC_", "MAKE", "PIP_"))}
    # No package index: the install fails at once, after the line it must print first.
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "no-packages-here"))

    run = subprocess.run(  # noqa: S603 (the copied checkout's own script)
        [str(checkout / "scripts" / "bootstrap"), "python"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )

    assert run.returncode != 0
    assert run.stderr.splitlines()[0] == (
        "bootstrap: installing Python packages into .venv (first run, about a minute)..."
    ), run.stderr
