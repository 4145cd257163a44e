"""Opaque refresh tokens: minting, hashing, and the successor box.

Refresh tokens are 256 random bits; the database keeps only their SHA-256,
which is enough for uniformly random secrets (no salt or slow hash needed).

The successor box answers concurrent refreshes. When a token is rotated, its
successor is stored encrypted under a key derived from the rotated token's own
plaintext, which the database never sees. A caller that presents the rotated
token within the grace window can therefore be handed the very same successor
(one chain, no fork), while the database alone cannot reveal it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "hash_refresh_token",
    "is_well_formed",
    "new_refresh_token",
    "open_successor",
    "seal_successor",
]

_TOKEN_BYTES = 32
# token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_BOX_KEY_LABEL = b"authsvc/v1 refresh successor box"
_NONCE_BYTES = 12


def new_refresh_token() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def is_well_formed(token: str) -> bool:
    """Cheap shape check, so garbage never costs a database lookup."""
    return _TOKEN_SHAPE.fullmatch(token) is not None


def hash_refresh_token(token: str) -> bytes:
    """Also a password-reset token's: the same 256 random bits. Any string hashes (as
    UTF-8, which a well-formed token's ASCII is), so a malformed reset token costs the
    same lookup as a spent one."""
    return hashlib.sha256(token.encode()).digest()


def _box_key(parent: str) -> bytes:
    return hmac.new(parent.encode("ascii"), _BOX_KEY_LABEL, hashlib.sha256).digest()


def seal_successor(parent: str, successor: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(_box_key(parent)).encrypt(nonce, successor.encode("ascii"), None)


def open_successor(parent: str, box: bytes) -> str | None:
    """The successor sealed for `parent`, or None if `parent` is not the key."""
    nonce, sealed = box[:_NONCE_BYTES], box[_NONCE_BYTES:]
    try:
        return AESGCM(_box_key(parent)).decrypt(nonce, sealed, None).decode("ascii")
    except (InvalidTag, ValueError):
        return None
