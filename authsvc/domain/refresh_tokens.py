"""Opaque refresh tokens: minting, hashing, routing, and the successor box.

A refresh token is `<user id>.<secret>`: the user's id as 22 base64url characters (the
routing prefix, so Refresh addresses that user's sessions alone, one shard on Citus; no
secret, the access token carries it as `sub`), a dot, and 256 random bits as 43 base64url
characters. The database keeps only the SHA-256 of the whole string, which is enough for
a uniformly random secret (no salt or slow hash needed), and means an edited prefix
matches no token. A token issued before the prefix (the 43 characters alone) still
works: its user is found by its hash.

The successor box answers concurrent refreshes. When a token is rotated, its
successor is stored encrypted under a key derived from the rotated token's own
plaintext, which the database never sees. A caller that presents the rotated
token within the grace window can therefore be handed the very same successor
(one chain, no fork), while the database alone cannot reveal it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.core.models import UserId

__all__ = [
    "hash_refresh_token",
    "is_well_formed",
    "new_refresh_token",
    "new_secret",
    "open_successor",
    "routed_user",
    "seal_successor",
]

_TOKEN_BYTES = 32
# token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet.
_RANDOM_PART = r"[A-Za-z0-9_-]{43}"
# 16 bytes are 22 characters unpadded; the last one holds 2 bits and 4 zero bits, so only
# A, Q, g or w: one spelling per id.
_USER_PART = r"[A-Za-z0-9_-]{21}[AQgw]"
_TOKEN_SHAPE = re.compile(rf"(?:(?P<user>{_USER_PART})\.)?{_RANDOM_PART}")
_BOX_KEY_LABEL = b"authsvc/v1 refresh successor box"
_NONCE_BYTES = 12


def new_secret() -> str:
    """256 random bits, unrouted: a password-reset token, or a legacy refresh token's shape."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def new_refresh_token(user_id: UserId) -> str:
    """A refresh token for a session of `user_id`, routed by its prefix."""
    prefix = base64.urlsafe_b64encode(user_id.bytes).rstrip(b"=").decode("ascii")
    return f"{prefix}.{new_secret()}"


def is_well_formed(token: str) -> bool:
    """Cheap shape check, so garbage never costs a database lookup. Routed tokens and
    legacy (prefix-less) ones both pass."""
    return _TOKEN_SHAPE.fullmatch(token) is not None


def routed_user(token: str) -> UserId | None:
    """The user a well-formed token's prefix names; None for a legacy token. Not proof of
    anything: only the hash lookup on that user's rows says the token is theirs."""
    match = _TOKEN_SHAPE.fullmatch(token)
    prefix = None if match is None else match["user"]
    if prefix is None:
        return None
    return UserId(uuid.UUID(bytes=base64.urlsafe_b64decode(prefix + "==")))


def hash_refresh_token(token: str) -> bytes:
    """Of the whole token, prefix included. Also a password-reset token's. Any string hashes (as
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
