"""Exactly-once Refresh: the idempotency key, and the decision that answers a retry.

gRPC retries send one Refresh more than once. A client sends a fresh key with each
rotation and the same key with every retry of it. The rotation keeps a hash of the key
on the consumed token's row (with the successor box, sealed by that token), so that a
later presentation of the same token with the same key is recognised as a retry and
answered with the same successor, where any other presentation after the grace window
is reuse. See docs/operations.md, "Exactly-once Refresh and retries".

Once the successor has itself been rotated, a retry of the older rotation is no longer
answered: its holder has moved on, so whoever presents the older token now is a second
holder, and the reuse rule applies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from authsvc.core.errors import InvalidArgument
from authsvc.core.models import RefreshTokenRecord
from authsvc.domain import refresh_tokens

__all__ = ["Retried", "TokenLookup", "hash_key", "retried_rotation", "validated_key"]

# 16 to 128 printable ASCII characters (a UUID is 36).
_KEY_SHAPE = re.compile(r"[\x20-\x7e]{16,128}")
_KEY_HASH_LABEL = b"authsvc/v1 refresh idempotency key\x00"


def validated_key(key: str) -> str | None:
    """The key as sent, or None when none was sent (the empty string).

    InvalidArgument (field `idempotency_key`) for anything but 16 to 128 printable
    ASCII characters."""
    if not key:
        return None
    if _KEY_SHAPE.fullmatch(key) is None:
        raise InvalidArgument(
            "idempotency_key", "idempotency_key must be 16 to 128 printable ASCII characters"
        )
    return key


def hash_key(presented_token: str, key: str) -> bytes:
    """What is stored for `key`: HMAC-SHA-256 keyed by the presented refresh token, so
    the database alone cannot test guesses at a key, and one key's hash says nothing
    about the same key sent with another token. `presented_token` must be well formed."""
    return hmac.new(
        presented_token.encode("ascii"), _KEY_HASH_LABEL + key.encode("ascii"), hashlib.sha256
    ).digest()


class TokenLookup(Protocol):
    """The part of a locked session this decision reads (domain.sessions.LockedSession)."""

    async def find_token(self, token_hash: bytes) -> RefreshTokenRecord | None:
        """The session's refresh token with this hash, rotated or not; None otherwise."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Retried:
    """The answer to a retried rotation: the successor it made, still current."""

    token: str
    expires_at: datetime
    token_id: uuid.UUID


async def retried_rotation(
    locked: TokenLookup, presented: str, record: RefreshTokenRecord, key_hash: bytes | None
) -> Retried | None:
    """The successor to answer with when the rotated `record` is presented again with
    the key its rotation was made with (`key_hash`, from `hash_key`) and that successor
    is still the session's current token. None otherwise: no key, another key, a
    rotation made without one, or a successor rotated since; the caller then applies
    the grace window or the reuse rule as for a presentation without a key."""
    stored = record.idempotency_key_hash
    if stored is None or key_hash is None or record.successor_box is None:
        return None
    if not hmac.compare_digest(stored, key_hash):
        return None
    successor = refresh_tokens.open_successor(presented, record.successor_box)
    if successor is None:
        return None
    current = await locked.find_token(refresh_tokens.hash_refresh_token(successor))
    if current is None or current.rotated_at is not None:
        return None
    return Retried(token=successor, expires_at=current.expires_at, token_id=current.id)
