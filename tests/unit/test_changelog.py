"""CHANGELOG.md describes the version the packages carry (authsvc/VERSION)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_changelog_has_a_dated_entry_with_proto_changes_for_the_declared_version() -> None:
    version = (ROOT / "authsvc" / "VERSION").read_text().strip()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    # Keep a Changelog: "## [1.2.3] - 2026-01-31", up to the next release heading.
    entry = re.search(
        rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}\n(.*?)(?=^## |\Z)",
        changelog,
        re.MULTILINE | re.DOTALL,
    )

    assert entry is not None, f"CHANGELOG.md has no dated '## [{version}] - YYYY-MM-DD' entry"
    assert re.search(r"^### Proto\n", entry[1], re.MULTILINE), "the entry lacks '### Proto'"
