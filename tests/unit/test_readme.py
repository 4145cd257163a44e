"""The README's configuration table is what the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from authsvc.config import SETTINGS

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| `(AUTHSVC_[A-Z0-9_]+)` \| `(--[a-z0-9-]+)` \| (.+?) \|", re.MULTILINE)


def _documented() -> dict[str, tuple[str, str]]:
    return {env: (flag, default) for env, flag, default in _ROW.findall(README.read_text())}


def test_readme_documents_every_setting_with_its_flag_and_default() -> None:
    documented = _documented()

    expected = {s.env: (s.flag, f"`{s.default}`" if s.default else "*(unset)*") for s in SETTINGS}
    assert documented == expected
