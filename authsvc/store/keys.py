"""SQL for access-token signing keys."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from authsvc.core.models import AuditEvent, SigningKey
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors

__all__ = ["PgKeyStore"]

_INSERT_IF_NONE_ACTIVE = """
INSERT INTO signing_keys (kid, algorithm, private_key_pem, public_jwk, created_at, activates_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT ((true)) WHERE retired_at IS NULL DO NOTHING
"""
# Arbitrary constant shared by every replica and CLI: "authsvc keys rotate".
_ROTATION_LOCK_KEY = 0x61757468_0003
_LOCK_ROTATION = "SELECT pg_advisory_xact_lock($1)"
_RETIRE_ACTIVE = "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL"
_INSERT = """
INSERT INTO signing_keys (kid, algorithm, private_key_pem, public_jwk, created_at, activates_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""
_SELECT_USABLE = """
SELECT kid, algorithm, private_key_pem, public_jwk, created_at, activates_at, retired_at
FROM signing_keys
WHERE retired_at IS NULL OR retired_at > $1
ORDER BY created_at DESC
"""


def _key(row: asyncpg.Record) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        algorithm=row["algorithm"],
        private_pem=bytes(row["private_key_pem"]),
        public_jwk=row["public_jwk"],
        created_at=row["created_at"],
        activates_at=row["activates_at"],
        retired_at=row["retired_at"],
    )


def _insert_args(key: SigningKey) -> tuple[object, ...]:
    return (
        key.kid,
        key.algorithm,
        key.private_pem,
        key.public_jwk,
        key.created_at,
        key.activates_at,
    )


class PgKeyStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_key_if_none_active(self, key: SigningKey) -> None:
        """Store `key` unless another replica already stored an active key."""
        async with translate_errors():
            await self._pool.execute(_INSERT_IF_NONE_ACTIVE, *_insert_args(key))

    async def rotate(self, key: SigningKey, event: AuditEvent) -> None:
        """Add `key`, retire the current key when `key` activates, and audit it, atomically."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            # Rotations queue here, so each one retires the key the previous one made.
            await conn.execute(_LOCK_ROTATION, _ROTATION_LOCK_KEY)
            await conn.execute(_RETIRE_ACTIVE, key.activates_at)
            await conn.execute(_INSERT, *_insert_args(key))
            await insert_event(conn, event)

    async def usable_keys(self, retired_after: datetime) -> list[SigningKey]:
        """The active key and the keys retired after `retired_after`, newest first."""
        async with translate_errors():
            rows = await self._pool.fetch(_SELECT_USABLE, retired_after)
        return [_key(row) for row in rows]
