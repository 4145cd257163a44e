"""Running the shell blocks of the docs as written (README.md's runbooks, the grpcurl
examples of docs/operations.md), so that they cannot rot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

__all__ = ["ROOT", "bash", "fenced_after", "pointed_at", "set_once"]

ROOT = Path(__file__).resolve().parents[1]


def fenced_after(document: str, marker: str) -> str:
    """The body of the first fenced block after an HTML comment marker."""
    match = re.search(rf"<!-- {marker}\b.*?-->\n```[a-z]*\n(.*?)```", document, re.DOTALL)
    assert match, f"no block marked {marker}"
    return match[1]


async def bash(script: str) -> tuple[int, str, str]:
    """Run `script` with bash from the repository root: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def pointed_at(script: str, port: int) -> str:
    return set_once(script, "ADDR", f"127.0.0.1:{port}")


def set_once(script: str, variable: str, value: str) -> str:
    """`script` with its one `VARIABLE=...` line (comment included) setting `value`."""
    script, count = re.subn(rf"^{variable}=.*$", f"{variable}={value}", script, flags=re.MULTILINE)
    assert count == 1, f"the block sets {variable} once"
    return script
