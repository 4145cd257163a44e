"""The metric catalogue (authsvc/telemetry/metrics.py) against what depends on it."""

from __future__ import annotations

import re
from pathlib import Path

from authsvc.core.models import SessionEndReason
from authsvc.telemetry.metrics import END_KINDS, EXPORTED_METRICS

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_end_reason_has_a_kind() -> None:
    # A reason without one would fail at the ending it names, after the ending committed.
    assert {reason.value for reason in SessionEndReason} <= END_KINDS.keys()


def test_the_operations_guide_lists_every_exported_metric_and_no_other() -> None:
    section = OPERATIONS.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1]
    section = section.split("\n## ", 1)[0]

    documented = set(re.findall(r"^\| `(authsvc_\w+)` \|", section, re.MULTILINE))

    assert documented == EXPORTED_METRICS
