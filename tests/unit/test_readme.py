"""The operations guide's configuration table is what the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from authsvc.config import SETTINGS, Setting

README = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
_ROW = re.compile(r"^\| `(AUTHSVC_[A-Z0-9_]+)` \| `(--[a-z0-9-]+)` \| (.+?) \|", re.MULTILINE)


def _documented() -> dict[str, tuple[str, str]]:
    return {env: (flag, default) for env, flag, default in _ROW.findall(README.read_text())}


def _shown_default(setting: Setting) -> str:
    if setting.shown_default:
        return f"*({setting.shown_default})*"
    return f"`{setting.default}`" if setting.default else "*(unset)*"


def test_readme_documents_every_setting_with_its_flag_and_default() -> None:
    documented = _documented()

    expected = {s.env: (s.flag, _shown_default(s)) for s in SETTINGS}
    assert documented == expected
