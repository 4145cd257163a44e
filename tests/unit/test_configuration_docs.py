"""docs/configuration.md is what the settings declaration says."""

from __future__ import annotations

from pathlib import Path

from authsvc import config as config_module

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
REGENERATE = ".venv/bin/python -m authsvc.config --markdown > docs/configuration.md"


def test_configuration_docs_are_generated_from_the_declared_settings() -> None:
    written = DOCS.read_text() if DOCS.exists() else ""

    assert written == config_module.markdown(), f"docs/configuration.md is stale: run {REGENERATE}"
