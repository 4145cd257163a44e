"""Opaque refresh tokens and the successor box: pure functions, no I/O."""

from __future__ import annotations

import base64
import hashlib
import uuid

import pytest

from authsvc.core.models import UserId
from authsvc.domain.refresh_tokens import (
    hash_refresh_token,
    is_well_formed,
    new_refresh_token,
    new_secret,
    open_successor,
    routed_user,
    seal_successor,
)

USER = UserId(uuid.UUID("6f1c2a3b-4d5e-4f60-8a1b-2c3d4e5f6a7b"))


def _flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- the successor box -----------------------------------------------------------


def test_sealed_successor_opens_with_its_parent() -> None:
    parent, successor = new_refresh_token(USER), new_refresh_token(USER)

    assert open_successor(parent, seal_successor(parent, successor)) == successor


def test_sealed_successor_does_not_open_with_another_parent() -> None:
    parent, successor = new_refresh_token(USER), new_refresh_token(USER)
    box = seal_successor(parent, successor)

    assert open_successor(new_refresh_token(USER), box) is None


def test_successor_box_does_not_contain_the_successor_in_clear() -> None:
    parent, successor = new_refresh_token(USER), new_refresh_token(USER)

    box = seal_successor(parent, successor)

    assert successor.encode() not in box


def test_sealing_twice_gives_different_boxes() -> None:
    parent, successor = new_refresh_token(USER), new_refresh_token(USER)

    assert seal_successor(parent, successor) != seal_successor(parent, successor)


@pytest.mark.parametrize("index", [0, 12, -1], ids=["nonce", "ciphertext", "tag"])
def test_tampered_successor_box_does_not_open(index: int) -> None:
    parent = new_refresh_token(USER)
    box = seal_successor(parent, new_refresh_token(USER))

    assert open_successor(parent, _flip_byte(box, index % len(box))) is None


@pytest.mark.parametrize("length", [0, 11, 27], ids=["empty", "short-nonce", "no-tag"])
def test_truncated_successor_box_does_not_open(length: int) -> None:
    parent = new_refresh_token(USER)
    box = seal_successor(parent, new_refresh_token(USER))

    assert open_successor(parent, box[:length]) is None


# --- tokens ----------------------------------------------------------------------


def test_new_refresh_token_is_its_users_id_a_dot_and_256_random_bits() -> None:
    prefix, secret = new_refresh_token(USER).split(".")

    assert base64.urlsafe_b64decode(prefix + "==") == USER.bytes
    assert len(prefix) == 22
    assert len(secret) == 43
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32


def test_routed_user_is_the_user_the_token_was_made_for() -> None:
    assert routed_user(new_refresh_token(USER)) == USER


def test_a_legacy_token_routes_to_no_user() -> None:
    legacy = new_secret()

    assert is_well_formed(legacy)
    assert routed_user(legacy) is None


def test_new_refresh_token_is_well_formed() -> None:
    assert is_well_formed(new_refresh_token(USER))


def test_new_refresh_tokens_differ() -> None:
    assert len({new_refresh_token(USER) for _ in range(100)}) == 100


_PREFIX = new_refresh_token(USER).split(".")[0]
_SECRET = "a" * 43


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a" * 42,
        "a" * 44,
        "a" * 43 + "\n",
        "a" * 42 + "+",
        "a" * 42 + "/",
        "a" * 42 + "=",
        "a" * 42 + "é",
        f"{_PREFIX}.{'a' * 42}",
        f"{_PREFIX[:-1]}.{_SECRET}",
        f"{_PREFIX}a.{_SECRET}",
        f"{_PREFIX[:-1]}B.{_SECRET}",
        f"{_PREFIX}{_SECRET}",
        f"{_PREFIX}..{_SECRET}",
        f".{_SECRET}",
        f"{_PREFIX}.",
    ],
    ids=[
        "empty",
        "42-chars",
        "44-chars",
        "trailing-newline",
        "plus",
        "slash",
        "padding",
        "non-ascii",
        "routed-short-secret",
        "21-char-prefix",
        "23-char-prefix",
        "prefix-not-the-one-spelling-of-an-id",
        "no-dot",
        "two-dots",
        "empty-prefix",
        "no-secret",
    ],
)
def test_is_well_formed_rejects_other_shapes(token: str) -> None:
    assert not is_well_formed(token)


def test_refresh_token_hash_covers_the_prefix() -> None:
    token = new_refresh_token(USER)
    other_user = UserId(uuid.uuid4())
    rerouted = new_refresh_token(other_user).split(".")[0] + "." + token.split(".")[1]

    assert hash_refresh_token(token) == hashlib.sha256(token.encode("ascii")).digest()
    assert hash_refresh_token(rerouted) != hash_refresh_token(token)
