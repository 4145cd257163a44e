"""The client README's Python examples run as written (against `authsvc serve`).

Each block runs in its own thread (the async ones call asyncio.run, which must not touch the
test session's event loop). The client README's blocks read the server's address from
AUTHSVC_ADDR and a service key from AUTHSVC_SERVICE_KEY, as a reader's would; only the CLI's
home directory is changed in their text.
"""

from __future__ import annotations

import re
import textwrap
import threading
from pathlib import Path

import pytest

from tests.clients.conftest import ServeProcess, ServiceKey

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "clients" / "python" / "README.md"
# Blocks may be indented (inside a list item).
_PYTHON_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
# A bound on one example's run, not a timing assertion.
EXAMPLE_TIMEOUT = 30.0


def _examples(readme: Path) -> list[str]:
    return [
        textwrap.dedent(body)
        for _indent, body in _PYTHON_BLOCK.findall(readme.read_text(encoding="utf-8"))
    ]


EXAMPLES = _examples(README)


def _run(source: str) -> BaseException | None:
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            exec(compile(source, str(README), "exec"), {"__name__": "__readme__"})  # noqa: S102
        except BaseException as exc:
            outcome[0] = exc

    thread = threading.Thread(target=run, name="readme-example")
    thread.start()
    thread.join(EXAMPLE_TIMEOUT)
    assert not thread.is_alive(), "example did not finish"
    return outcome[0]


def test_readme_has_the_examples_it_promises() -> None:
    assert len(EXAMPLES) == 7


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_readme_example_runs_against_the_server(
    number: int,
    serve: ServeProcess,
    service_key: ServiceKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTHSVC_ADDR", serve.target)
    monkeypatch.setenv("AUTHSVC_SERVICE_KEY", service_key.key)
    source = EXAMPLES[number].replace("Path.home()", f"Path({str(tmp_path)!r})")

    failure = _run(source)

    assert failure is None, repr(failure)
