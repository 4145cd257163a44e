"""The idempotency key's shape and its stored hash (domain/idempotent_refresh.py)."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from authsvc.core.errors import InvalidArgument
from authsvc.core.models import UserId
from authsvc.domain.idempotent_refresh import hash_key, validated_key
from authsvc.domain.refresh_tokens import new_refresh_token

KEY = "0b8f5f3e-8a4b-4a59-9d43-2b1c7a0e9f11"


def _a_token() -> str:
    return new_refresh_token(UserId(uuid.uuid4()))


def test_no_key_is_none() -> None:
    assert validated_key("") is None


@pytest.mark.parametrize("key", [" " * 16, "~" * 128, KEY])
def test_printable_ascii_of_16_to_128_characters_is_a_key(key: str) -> None:
    assert validated_key(key) == key


@pytest.mark.parametrize("key", ["a" * 15, "a" * 129, "ü" * 16, "a" * 15 + "\x7f", "a" * 15 + "\n"])
def test_anything_else_is_invalid_field_idempotency_key(key: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validated_key(key)
    assert refused.value.field == "idempotency_key"


def test_the_stored_hash_is_neither_the_key_nor_its_plain_digest() -> None:
    stored = hash_key(_a_token(), KEY)
    assert KEY.encode() not in stored
    assert stored != hashlib.sha256(KEY.encode()).digest()


def test_the_same_key_hashes_differently_for_another_token() -> None:
    # A dump cannot match one key across tokens, nor test guesses without the token.
    assert hash_key(_a_token(), KEY) != hash_key(_a_token(), KEY)


def test_the_same_token_and_key_hash_alike() -> None:
    token = _a_token()
    assert hash_key(token, KEY) == hash_key(token, KEY)
