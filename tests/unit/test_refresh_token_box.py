"""Opaque refresh tokens and the successor box: pure functions, no I/O."""

from __future__ import annotations

import base64
import hashlib

import pytest

from authsvc.domain.refresh_tokens import (
    hash_refresh_token,
    is_well_formed,
    new_refresh_token,
    open_successor,
    seal_successor,
)


def _flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- the successor box -----------------------------------------------------------


def test_sealed_successor_opens_with_its_parent() -> None:
    parent, successor = new_refresh_token(), new_refresh_token()

    assert open_successor(parent, seal_successor(parent, successor)) == successor


def test_sealed_successor_does_not_open_with_another_parent() -> None:
    parent, successor = new_refresh_token(), new_refresh_token()
    box = seal_successor(parent, successor)

    assert open_successor(new_refresh_token(), box) is None


def test_successor_box_does_not_contain_the_successor_in_clear() -> None:
    parent, successor = new_refresh_token(), new_refresh_token()

    box = seal_successor(parent, successor)

    assert successor.encode() not in box


def test_sealing_twice_gives_different_boxes() -> None:
    parent, successor = new_refresh_token(), new_refresh_token()

    assert seal_successor(parent, successor) != seal_successor(parent, successor)


@pytest.mark.parametrize("index", [0, 12, -1], ids=["nonce", "ciphertext", "tag"])
def test_tampered_successor_box_does_not_open(index: int) -> None:
    parent = new_refresh_token()
    box = seal_successor(parent, new_refresh_token())

    assert open_successor(parent, _flip_byte(box, index % len(box))) is None


@pytest.mark.parametrize("length", [0, 11, 27], ids=["empty", "short-nonce", "no-tag"])
def test_truncated_successor_box_does_not_open(length: int) -> None:
    parent = new_refresh_token()
    box = seal_successor(parent, new_refresh_token())

    assert open_successor(parent, box[:length]) is None


# --- tokens ----------------------------------------------------------------------


def test_new_refresh_token_carries_256_random_bits() -> None:
    token = new_refresh_token()

    assert len(token) == 43
    assert len(base64.urlsafe_b64decode(token + "=")) == 32


def test_new_refresh_token_is_well_formed() -> None:
    assert is_well_formed(new_refresh_token())


def test_new_refresh_tokens_differ() -> None:
    assert len({new_refresh_token() for _ in range(100)}) == 100


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
    ],
)
def test_is_well_formed_rejects_other_shapes(token: str) -> None:
    assert not is_well_formed(token)


def test_refresh_token_hash_is_its_sha256() -> None:
    token = new_refresh_token()

    assert hash_refresh_token(token) == hashlib.sha256(token.encode("ascii")).digest()
