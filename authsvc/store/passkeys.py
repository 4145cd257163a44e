"""SQL for passkeys: WebAuthn challenges (migration 0031) and the passkey rows of
user_factors (migration 0030). Contracts on domain.passkeys.PasskeyStore."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from authsvc.core.errors import FactorAlreadyEnrolled
from authsvc.core.models import (
    AuditEvent,
    EndedSession,
    SessionEnder,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.core.passkeys import Challenge, NewPasskey, StoredPasskey
from authsvc.store.errors import translate_errors
from authsvc.store.factors import issue_first_recovery_codes
from authsvc.store.sessions import end_user_sessions
from authsvc.store.users import fetch_user_email

__all__ = ["PgPasskeyStore"]

_PASSKEY_COLUMNS = """
id, user_id, name, credential_id, public_key, sign_count, transports, created_at, last_used_at
"""
_PASSKEYS = f"""
SELECT {_PASSKEY_COLUMNS} FROM user_factors
WHERE user_id = $1 AND kind = 'passkey' ORDER BY created_at, id
"""  # noqa: S608 (a constant column list)
# Through user_factors_credential (user_id, credential_id) WHERE kind = 'passkey'.
_FIND_PASSKEY = f"""
SELECT {_PASSKEY_COLUMNS} FROM user_factors
WHERE user_id = $1 AND credential_id = $2 AND kind = 'passkey'
"""  # noqa: S608 (a constant column list)
_SAVE_CHALLENGE = """
INSERT INTO webauthn_challenges
    (id, user_id, purpose, binding, challenge_hash, created_at, expires_at, name)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
# Single use: of concurrent deletes of one row, one returns it. A mismatch deletes
# nothing, so a wrong answer cannot burn another ceremony's challenge.
_TAKE_CHALLENGE = """
DELETE FROM webauthn_challenges
WHERE id = $1 AND purpose = $2 AND user_id IS NOT DISTINCT FROM $3
  AND binding IS NOT DISTINCT FROM $4 AND challenge_hash = $5 AND expires_at > $6
RETURNING id, user_id, purpose, binding, challenge_hash, created_at, expires_at, name
"""
# Conditional on the count read: of two uses racing with one count, one wins.
_RECORD_USE = """
UPDATE user_factors SET sign_count = $4, last_used_at = $5
WHERE user_id = $1 AND id = $2 AND kind = 'passkey' AND sign_count = $3
"""
_LOCK_USER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"
_INSERT_PASSKEY = """
INSERT INTO user_factors (user_id, id, kind, name, created_at, confirmed_at,
    credential_id, public_key, sign_count, transports)
VALUES ($1, $2, 'passkey', $3, $4, $4, $5, $6, $7, $8)
"""


def _passkey(row: asyncpg.Record) -> StoredPasskey:
    return StoredPasskey(
        id=row["id"],
        user_id=UserId(row["user_id"]),
        name=row["name"],
        credential_id=bytes(row["credential_id"]),
        public_key=bytes(row["public_key"]),
        sign_count=row["sign_count"],
        transports=tuple(row["transports"] or ()),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )


class PgPasskeyStore:
    """domain.passkeys.PasskeyStore in PostgreSQL."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def user_email(self, user_id: UserId) -> str | None:
        async with translate_errors():
            return await fetch_user_email(self._pool, user_id)

    async def passkeys(self, user_id: UserId) -> list[StoredPasskey]:
        async with translate_errors():
            return [_passkey(row) for row in await self._pool.fetch(_PASSKEYS, user_id)]

    async def save_challenge(self, challenge: Challenge) -> None:
        async with translate_errors():
            await self._pool.execute(
                _SAVE_CHALLENGE,
                challenge.id,
                challenge.user_id,
                challenge.purpose,
                challenge.binding,
                challenge.challenge_hash,
                challenge.created_at,
                challenge.expires_at,
                challenge.name,
            )

    async def take_challenge(
        self,
        challenge_id: uuid.UUID,
        *,
        purpose: str,
        user_id: UserId | None,
        binding: uuid.UUID | None,
        challenge_hash: bytes,
        now: datetime,
    ) -> Challenge | None:
        async with translate_errors():
            row = await self._pool.fetchrow(
                _TAKE_CHALLENGE, challenge_id, purpose, user_id, binding, challenge_hash, now
            )
        if row is None:
            return None
        return Challenge(
            id=row["id"],
            user_id=None if row["user_id"] is None else UserId(row["user_id"]),
            purpose=row["purpose"],
            binding=row["binding"],
            challenge_hash=bytes(row["challenge_hash"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            name=row["name"],
        )

    async def find_passkey(self, user_id: UserId, credential_id: bytes) -> StoredPasskey | None:
        async with translate_errors():
            row = await self._pool.fetchrow(_FIND_PASSKEY, user_id, credential_id)
        return None if row is None else _passkey(row)

    async def record_use(self, passkey: StoredPasskey, *, sign_count: int, now: datetime) -> bool:
        async with translate_errors():
            status = await self._pool.execute(
                _RECORD_USE, passkey.user_id, passkey.id, passkey.sign_count, sign_count, now
            )
        return bool(status == "UPDATE 1")

    async def add_passkey(
        self,
        passkey: NewPasskey,
        *,
        first_codes: list[bytes],
        keep: SessionId | None,
        event: AuditEvent,
    ) -> tuple[list[EndedSession], bool] | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            # The user's row lock: a session created meanwhile is ended too, and a
            # concurrent DeleteUser either ran before (None) or waits.
            if await conn.fetchval(_LOCK_USER, passkey.user_id) is None:
                return None
            try:
                await conn.execute(
                    _INSERT_PASSKEY,
                    passkey.user_id,
                    passkey.id,
                    passkey.name,
                    passkey.created_at,
                    passkey.credential_id,
                    passkey.public_key,
                    passkey.sign_count,
                    list(passkey.transports),
                )
            except asyncpg.UniqueViolationError as exc:
                raise FactorAlreadyEnrolled("this passkey is registered already") from exc
            issued = await issue_first_recovery_codes(
                conn, passkey.user_id, passkey.id, first_codes, passkey.created_at
            )
            ended = await end_user_sessions(
                conn,
                passkey.user_id,
                now=passkey.created_at,
                revoke_reason=SessionEndReason.SECOND_FACTOR_CHANGED.value,
                ended_by=SessionEndReason.SECOND_FACTOR_CHANGED,
                ender=SessionEnder.user(keep),
                event=event,
                keep=keep,
            )
            return ended, issued
