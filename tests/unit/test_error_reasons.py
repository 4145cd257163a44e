"""The ErrorInfo reasons the service answers with are exactly the proto's ErrorReason values,
each with the status code its proto comment and the error table of docs/errors.md give it."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from authsvc.api.errors import answer_for
from authsvc.core.errors import SessionEnded, Unauthenticated
from authsvc.v1.error_reason_pb2 import ErrorReason
from tests.helpers import documented_reasons, error_classes, served_reasons

ROOT = Path(__file__).resolve().parents[2]
ERRORS_DOC = ROOT / "docs" / "errors.md"

_ERRORS_TABLE = re.compile(r"^\| Reason \| Code \| When \|\n\|---\|---\|---\|\n((?:\|.*\n)+)", re.M)
_ERRORS_ROW = re.compile(r"^\| `([A-Z_]+)` \| ([A-Z_]+) \|")


def _served() -> dict[str, str]:
    return {reason: code.name for reason, code in served_reasons().items()}


def _enum_reasons() -> set[str]:
    return set(ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}


def test_every_error_class_answers_with_a_reason_of_its_own() -> None:
    # Unauthenticated and SessionEnded only group the others: the service never raises
    # either as such.
    reasons = {
        cls.__name__: ErrorReason.Name(answer_for(cls)[1])
        for cls in error_classes()
        if cls not in (Unauthenticated, SessionEnded)
    }

    shared = {reason for reason, count in Counter(reasons.values()).items() if count > 1}
    assert (shared, "INTERNAL" in reasons.values()) == (set(), False), reasons


def test_the_service_answers_with_exactly_the_enums_reasons() -> None:
    assert set(_served()) == _enum_reasons()


def test_each_reasons_proto_comment_names_the_code_it_is_sent_with() -> None:
    assert documented_reasons() == _served()


def test_the_error_table_lists_every_reason_with_its_code() -> None:
    [table] = _ERRORS_TABLE.findall(ERRORS_DOC.read_text())
    documented = {}
    for line in table.splitlines():
        row = _ERRORS_ROW.match(line)
        assert row, line
        documented[row[1]] = row[2]

    assert documented == _served()
