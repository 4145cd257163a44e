"""SQL for password-reset tokens (migration 0016)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from authsvc.core.models import (
    AuditEvent,
    EndedSession,
    ResetTarget,
    SessionEnder,
    SessionEndReason,
    UserId,
)
from authsvc.store.accounts import set_password_hash
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.sessions import end_user_sessions

__all__ = ["PgPasswordResetStore"]

_USER_BY_ID = "SELECT id, email, disabled_at IS NOT NULL AS disabled FROM users WHERE id = $1"
_USER_BY_EMAIL = "SELECT id, email, disabled_at IS NOT NULL AS disabled FROM users WHERE email = $1"
# Nothing for a disabled account; the foreign key refuses one deleted meanwhile.
_INSERT_TOKEN = """
INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at)
SELECT $1, id, $3, $4 FROM users WHERE id = $2 AND disabled_at IS NULL
"""
_FIND_TARGET = """
SELECT u.id, u.email, false AS disabled
FROM password_reset_tokens AS t JOIN users AS u ON u.id = t.user_id
WHERE t.token_hash = $1 AND t.expires_at > $2 AND u.disabled_at IS NULL
"""
# The user's row lock serialises every reset of the account (and its disabling and
# deletion). A reset that waited here re-reads the token in the next statement, which
# sees the winner's commit: the token is gone, and only one reset changes anything.
_LOCK_TOKEN_USER = """
SELECT id FROM users
WHERE id = (SELECT user_id FROM password_reset_tokens WHERE token_hash = $1)
  AND disabled_at IS NULL
FOR UPDATE
"""
_TOKEN_IS_GOOD = "SELECT true FROM password_reset_tokens WHERE token_hash = $1 AND expires_at > $2"
_SPEND_ALL_OF_USER = "DELETE FROM password_reset_tokens WHERE user_id = $1"


def _target(row: asyncpg.Record) -> ResetTarget:
    return ResetTarget(user_id=UserId(row["id"]), email=row["email"], disabled=row["disabled"])


class PgPasswordResetStore:
    """domain.password_resets.PasswordResetStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find_user(self, *, user_id: UserId | None, email: str | None) -> ResetTarget | None:
        async with translate_errors():
            if user_id is not None:
                row = await self._pool.fetchrow(_USER_BY_ID, user_id)
            else:
                row = await self._pool.fetchrow(_USER_BY_EMAIL, email)
        return None if row is None else _target(row)

    async def create_token(
        self, *, token_hash: bytes, user_id: UserId, expires_at: datetime, event: AuditEvent
    ) -> bool:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            try:
                status = await conn.execute(
                    _INSERT_TOKEN, token_hash, user_id, event.occurred_at, expires_at
                )
            except asyncpg.ForeignKeyViolationError:
                return False
            if status != "INSERT 0 1":
                return False
            await insert_event(conn, event)
        return True

    async def find_target(self, token_hash: bytes, *, now: datetime) -> ResetTarget | None:
        async with translate_errors():
            row = await self._pool.fetchrow(_FIND_TARGET, token_hash, now)
        return None if row is None else _target(row)

    async def reset(
        self,
        token_hash: bytes,
        *,
        now: datetime,
        password_hash: str,
        event: AuditEvent,
    ) -> list[EndedSession] | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            user_id = await conn.fetchval(_LOCK_TOKEN_USER, token_hash)
            if user_id is None or not await conn.fetchval(_TOKEN_IS_GOOD, token_hash, now):
                return None
            await conn.execute(_SPEND_ALL_OF_USER, user_id)
            await set_password_hash(conn, UserId(user_id), password_hash, now)
            return await end_user_sessions(
                conn,
                UserId(user_id),
                now=now,
                revoke_reason=SessionEndReason.PASSWORD_RESET.value,
                ended_by=SessionEndReason.PASSWORD_RESET,
                # The user, by a call that has no session.
                ender=SessionEnder.user(None),
                event=event,
                keep=None,
            )
