"""ListSessions page tokens and page sizes (AIP-158)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from authsvc.api import convert
from authsvc.api.errors import reason_of
from authsvc.core.errors import InvalidArgument, InvalidPageToken
from authsvc.core.models import SessionId, UserId

ALICE = UserId(uuid.UUID("00000000-0000-4000-8000-00000000a11c"))
BOB = UserId(uuid.UUID("00000000-0000-4000-8000-000000000b0b"))
SESSION = SessionId(uuid.UUID("5e551011-0000-4000-8000-000000000001"))
INSTANT = datetime(2025, 3, 1, 12, 30, 45, 123456, tzinfo=UTC)


def alice_token() -> str:
    return convert.encode_page_token(ALICE, (INSTANT, SESSION))


def token_body(token: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return body


def encode_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def with_fields(**changes: Any) -> str:
    """Alice's token with some fields of its body replaced."""
    return encode_raw(json.dumps({**token_body(alice_token()), **changes}).encode())


def test_page_token_round_trips_the_cursor() -> None:
    token = convert.encode_page_token(ALICE, (INSTANT, SESSION))

    assert convert.decode_page_token(ALICE, token) == (INSTANT, SESSION)


def test_page_token_round_trip_keeps_the_instant_when_not_utc() -> None:
    instant = datetime(2025, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    token = convert.encode_page_token(ALICE, (instant, SESSION))

    decoded = convert.decode_page_token(ALICE, token)

    assert decoded is not None
    assert decoded[0] == instant


def test_page_token_is_url_safe_text() -> None:
    token = alice_token()

    assert token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_empty_page_token_means_first_page() -> None:
    assert convert.decode_page_token(ALICE, "") is None


def test_page_token_of_another_user_is_invalid() -> None:
    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(BOB, alice_token())


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "not a page token!",
        "%%%%",
        "a",
        "é",
        encode_raw(b"\xff\xfe\xfd"),
        encode_raw(b"not json"),
        encode_raw(b"null"),
        encode_raw(b"[1, 2]"),
        encode_raw(b'"text"'),
        encode_raw(b"{}"),
    ],
    ids=[
        "word",
        "spaces-and-punctuation",
        "not-base64",
        "one-character",
        "non-ascii",
        "not-utf8",
        "not-json",
        "json-null",
        "json-list",
        "json-string",
        "empty-object",
    ],
)
def test_garbage_page_token_is_invalid(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(ALICE, token)


def test_truncated_page_token_is_invalid() -> None:
    token = alice_token()

    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(ALICE, token[: len(token) // 2])


@pytest.mark.parametrize(
    "changes",
    [
        {"v": 2},
        {"v": None},
        {"u": None},
        {"t": "yesterday"},
        {"t": 1740832245},
        {"t": None},
        {"i": "not-a-uuid"},
        {"i": None},
        {"i": 12345},
        {"i": ["5e551011-0000-4000-8000-000000000001"]},
    ],
    ids=[
        "unknown-version",
        "no-version",
        "no-owner",
        "time-not-iso",
        "time-a-number",
        "time-null",
        "id-not-uuid",
        "id-null",
        "id-a-number",
        "id-a-list",
    ],
)
def test_tampered_page_token_is_invalid(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(ALICE, with_fields(**changes))


def test_page_token_missing_a_field_is_invalid() -> None:
    body = token_body(alice_token())
    del body["i"]
    token = encode_raw(json.dumps(body).encode())

    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(ALICE, token)


def test_deeply_nested_page_token_is_invalid() -> None:
    # About 2.7 KB of text: well inside a request the server accepts.
    token = encode_raw(b"[" * 1000 + b"]" * 1000)

    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(ALICE, token)


def test_page_token_with_naive_timestamp_is_invalid() -> None:
    token = with_fields(t=INSTANT.replace(tzinfo=None).isoformat())

    with pytest.raises(InvalidPageToken):
        convert.decode_page_token(ALICE, token)


def test_invalid_page_token_names_the_page_token_field() -> None:
    with pytest.raises(InvalidPageToken) as caught:
        convert.decode_page_token(ALICE, "garbage")

    assert (reason_of(caught.value), caught.value.metadata) == (
        "INVALID_PAGE_TOKEN",
        {"field": "page_token"},
    )


@pytest.mark.parametrize(
    ("requested", "used"),
    [(0, 50), (1, 1), (50, 50), (999, 999), (1000, 1000), (1001, 1000), (5000, 1000)],
)
def test_page_size_defaults_and_clamps(requested: int, used: int) -> None:
    assert convert.page_size(requested) == used


@pytest.mark.parametrize("requested", [-1, -50, -(2**31)])
def test_negative_page_size_is_invalid_argument_naming_the_field(requested: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.page_size(requested)

    assert reason_of(caught.value) == "INVALID_FIELD"
    assert caught.value.field == "page_size"
