"""Logins awaiting their second step (migration 0029), in PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from authsvc.core.factors import StoredPendingLogin
from authsvc.core.models import UserId
from authsvc.store.errors import translate_errors

__all__ = ["PgPendingLoginStore"]

_INSERT = """
INSERT INTO pending_logins (user_id, token_hash, id, created_at, expires_at, password_digest,
    enrolment_required, remember_me, device_name, ip_address, user_agent)
VALUES ($1, $2, $3, $4, $5, sha256(convert_to($6, 'UTF8')), $7, $8, $9, $10, $11)
"""
# Live, with attempts left, and its password still the account's (the digest of the hash
# that was verified): a password changed or reset since refuses it.
_FIND = """
SELECT p.id, p.created_at, p.expires_at, p.enrolment_required, p.remember_me, p.device_name,
    p.ip_address, p.user_agent, u.email, u.password_hash
FROM pending_logins AS p JOIN users AS u ON u.id = p.user_id
WHERE p.user_id = $1 AND p.token_hash = $2 AND p.expires_at > $3 AND p.failed_attempts < $4
  AND u.disabled_at IS NULL AND p.password_digest = sha256(convert_to(u.password_hash, 'UTF8'))
"""
# A wrong code: one attempt fewer (_FIND refuses it after the last; the sweeper deletes it).
_FAILED = """
UPDATE pending_logins SET failed_attempts = failed_attempts + 1 WHERE user_id = $1 AND id = $2
"""
# Used up once: of two completions racing, one deletes the row.
_CONSUME = "DELETE FROM pending_logins WHERE user_id = $1 AND id = $2 AND expires_at > $3"


class PgPendingLoginStore:
    """domain.pending_logins.PendingLoginStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, pending: StoredPendingLogin, *, token_hash: bytes) -> None:
        async with translate_errors():
            await self._pool.execute(
                _INSERT,
                pending.user_id,
                token_hash,
                pending.id,
                pending.created_at,
                pending.expires_at,
                pending.password_hash,
                pending.enrolment_required,
                pending.remember_me,
                pending.device_name,
                pending.ip_address,
                pending.user_agent,
            )

    async def find(
        self, user_id: UserId, token_hash: bytes, *, now: datetime, max_failures: int
    ) -> StoredPendingLogin | None:
        async with translate_errors():
            row = await self._pool.fetchrow(_FIND, user_id, token_hash, now, max_failures)
        if row is None:
            return None
        return StoredPendingLogin(
            id=row["id"],
            user_id=user_id,
            email=row["email"],
            password_hash=row["password_hash"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            enrolment_required=row["enrolment_required"],
            remember_me=row["remember_me"],
            device_name=row["device_name"],
            ip_address=row["ip_address"],
            user_agent=row["user_agent"],
        )

    async def failed(self, user_id: UserId, pending_id: uuid.UUID) -> None:
        async with translate_errors():
            await self._pool.execute(_FAILED, user_id, pending_id)

    async def consume(self, user_id: UserId, pending_id: uuid.UUID, *, now: datetime) -> bool:
        async with translate_errors():
            deleted = await self._pool.execute(_CONSUME, user_id, pending_id, now)
        return deleted == "DELETE 1"
