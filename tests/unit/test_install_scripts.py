"""scripts/install_*: each is a no-op where its tool is (the bootstrap runs them every time)
and a loud failure where the tool is missing and cannot be installed, since the checks that
need it must not pass quietly without it. They share `debian_install` (scripts/lib.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@dataclass(frozen=True)
class Tool:
    script: str
    # Environment that makes the tool missing, and how its absence is named.
    missing_env: dict[str, str]
    hidden_commands: tuple[str, ...]
    missing_message: str


TOOLS = (
    Tool("install_promtool", {}, ("promtool",), "error: promtool not found"),
    Tool("install_pgbouncer", {}, ("pgbouncer",), "error: pgbouncer not found"),
    # The browser tests launch a path, not a command: CHROMIUM names a path that is not there.
    Tool(
        "install_chromium",
        {"CHROMIUM": "/nonexistent/chromium"},
        (),
        "error: /nonexistent/chromium not found",
    ),
)


def _path_of(bin_dir: Path, *, hidden: tuple[str, ...]) -> str:
    """A PATH of one directory holding what the scripts use, and the tools not `hidden`,
    but never apt-get: had a script tried to install, it would have failed."""
    bin_dir.mkdir()
    for command in ("bash", "dirname", "promtool", "pgbouncer"):
        found = shutil.which(command, path=f"{os.environ['PATH']}{os.pathsep}/usr/sbin")
        if command not in hidden and found is not None:
            (bin_dir / command).symlink_to(found)
    return str(bin_dir)


def _run(tool: Tool, path: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {key: value for key, value in os.environ.items() if key != "CHROMIUM"}
    return subprocess.run(  # noqa: S603 (the repo's own script)
        [str(SCRIPTS / tool.script)],
        env={**inherited, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("tool", TOOLS, ids=lambda tool: tool.script)
def test_with_the_tool_installed_it_installs_nothing(tool: Tool, tmp_path: Path) -> None:
    run = _run(tool, _path_of(tmp_path / "bin", hidden=()), {})

    assert (run.returncode, run.stderr) == (0, "")


# Not install_pgbouncer: it looks in /usr/sbin itself (a non-root PATH may lack it), where
# the bootstrap installed pgbouncer, so its absence cannot be staged without removing it.
@pytest.mark.parametrize(
    "tool", [t for t in TOOLS if t.script != "install_pgbouncer"], ids=lambda tool: tool.script
)
def test_without_the_tool_or_a_way_to_install_it_it_fails_naming_it(
    tool: Tool, tmp_path: Path
) -> None:
    run = _run(tool, _path_of(tmp_path / "bin", hidden=tool.hidden_commands), tool.missing_env)

    assert run.returncode != 0
    assert run.stderr.startswith(tool.missing_message), run.stderr
