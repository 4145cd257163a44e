"""SQL for access-token signing keys."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from authsvc.core.models import AuditEvent, PlaintextPrivateKey, SealedPrivateKey, SigningKey
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors

__all__ = ["PgKeyStore"]

# private_key_pem is the plaintext column of versions before migration 0011: never written
# now (a constraint refuses it), read only to seal what an earlier version left there.
_INSERT_IF_NONE_ACTIVE = """
INSERT INTO signing_keys (
    kid, algorithm, kek_id, wrapped_data_key, private_key_ciphertext, public_jwk, created_at,
    activates_at
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT ((true)) WHERE retired_at IS NULL DO NOTHING
"""
# Arbitrary constant shared by every replica and CLI: "authsvc keys rotate".
_ROTATION_LOCK_KEY = 0x61757468_0003
_LOCK_ROTATION = "SELECT pg_advisory_xact_lock($1)"
_RETIRE_ACTIVE = "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL"
_INSERT = """
INSERT INTO signing_keys (
    kid, algorithm, kek_id, wrapped_data_key, private_key_ciphertext, public_jwk, created_at,
    activates_at
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_SELECT_USABLE = """
SELECT kid, algorithm, kek_id, wrapped_data_key, private_key_ciphertext, private_key_pem,
    public_jwk, created_at, activates_at, retired_at
FROM signing_keys
WHERE retired_at IS NULL OR retired_at > $1
ORDER BY created_at DESC
"""
_SELECT_PRIVATE_KEYS = """
SELECT kid, kek_id, wrapped_data_key, private_key_ciphertext, private_key_pem
FROM signing_keys
WHERE private_key_pem IS NOT NULL OR NOT $1
ORDER BY created_at
"""
# Compare-and-set: a concurrent rewrap (another replica starting) changes nothing twice.
_REPLACE_PRIVATE_KEY = """
UPDATE signing_keys
SET kek_id = $2, wrapped_data_key = $3, private_key_ciphertext = $4, private_key_pem = NULL
WHERE kid = $1
    AND kek_id IS NOT DISTINCT FROM $5
    AND wrapped_data_key IS NOT DISTINCT FROM $6
    AND private_key_pem IS NOT DISTINCT FROM $7
"""


def _private_key(row: asyncpg.Record) -> SealedPrivateKey | PlaintextPrivateKey:
    if row["kek_id"] is None:
        return PlaintextPrivateKey(pem=bytes(row["private_key_pem"]))
    return SealedPrivateKey(
        kek_id=row["kek_id"],
        wrapped_data_key=bytes(row["wrapped_data_key"]),
        ciphertext=bytes(row["private_key_ciphertext"]),
    )


def _key(row: asyncpg.Record) -> SigningKey:
    return SigningKey(
        kid=row["kid"],
        algorithm=row["algorithm"],
        private_key=_private_key(row),
        public_jwk=row["public_jwk"],
        created_at=row["created_at"],
        activates_at=row["activates_at"],
        retired_at=row["retired_at"],
    )


def _insert_args(key: SigningKey) -> tuple[object, ...]:
    if not isinstance(key.private_key, SealedPrivateKey):
        raise TypeError(f"signing key {key.kid}: only sealed private keys are stored")
    return (
        key.kid,
        key.algorithm,
        key.private_key.kek_id,
        key.private_key.wrapped_data_key,
        key.private_key.ciphertext,
        key.public_jwk,
        key.created_at,
        key.activates_at,
    )


class PgKeyStore:
    """domain.signing_keys.KeyStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add_key_if_none_active(self, key: SigningKey) -> None:
        async with translate_errors():
            await self._pool.execute(_INSERT_IF_NONE_ACTIVE, *_insert_args(key))

    async def rotate(self, key: SigningKey, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            # Rotations queue here, so each one retires the key the previous one made.
            await conn.execute(_LOCK_ROTATION, _ROTATION_LOCK_KEY)
            await conn.execute(_RETIRE_ACTIVE, key.activates_at)
            await conn.execute(_INSERT, *_insert_args(key))
            await insert_event(conn, event)

    async def usable_keys(self, retired_after: datetime) -> list[SigningKey]:
        async with translate_errors():
            rows = await self._pool.fetch(_SELECT_USABLE, retired_after)
        return [_key(row) for row in rows]

    async def private_keys(
        self, *, plaintext_only: bool
    ) -> list[tuple[str, SealedPrivateKey | PlaintextPrivateKey]]:
        async with translate_errors():
            rows = await self._pool.fetch(_SELECT_PRIVATE_KEYS, plaintext_only)
        return [(row["kid"], _private_key(row)) for row in rows]

    async def replace_private_key(
        self,
        kid: str,
        old: SealedPrivateKey | PlaintextPrivateKey,
        new: SealedPrivateKey,
    ) -> bool:
        if isinstance(old, SealedPrivateKey):
            expected: tuple[object, ...] = (old.kek_id, old.wrapped_data_key, None)
        else:
            expected = (None, None, old.pem)
        async with translate_errors():
            status = await self._pool.execute(
                _REPLACE_PRIVATE_KEY,
                kid,
                new.kek_id,
                new.wrapped_data_key,
                new.ciphertext,
                *expected,
            )
        return bool(status == "UPDATE 1")
