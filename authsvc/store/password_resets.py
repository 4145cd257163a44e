"""SQL for password-reset tokens (migrations 0016, 0026)."""

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
from authsvc.store.emails import owner_of_email
from authsvc.store.errors import translate_errors
from authsvc.store.sessions import end_user_sessions

__all__ = ["PgPasswordResetStore"]

_USER_BY_ID = "SELECT id, email, disabled_at IS NOT NULL AS disabled FROM users WHERE id = $1"
# No foreign key to users since migration 0026 (the tokens are not co-located with them on
# Citus): issuing a token holds the account's key-share lock, as the key's check did, so a
# DeleteUser (FOR UPDATE) waits for the token to commit and deletes it, or goes first and
# then the account is gone here; a DisableUser in flight is waited for and then seen.
_LOCK_ENABLED_USER = "SELECT id FROM users WHERE id = $1 AND disabled_at IS NULL FOR KEY SHARE"
_INSERT_TOKEN = """
INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at)
VALUES ($1, $2, $3, $4)
"""
# A token's user never changes, so reset reads it in a statement of its own before the lock.
_TOKEN_USER = "SELECT user_id FROM password_reset_tokens WHERE token_hash = $1 AND expires_at > $2"
_ENABLED_TARGET = (
    "SELECT id, email, false AS disabled FROM users WHERE id = $1 AND disabled_at IS NULL"
)
# The user's row lock serialises every reset of the account (and its disabling and
# deletion). A reset that waited here re-reads the token in the next statement, which
# sees the winner's commit: the token is gone, and only one reset changes anything.
_LOCK_TOKEN_USER = "SELECT id FROM users WHERE id = $1 AND disabled_at IS NULL FOR UPDATE"
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
        async with translate_errors(), self._pool.acquire() as conn:
            if user_id is None and email is not None:
                user_id = await owner_of_email(conn, email)
            row = None if user_id is None else await conn.fetchrow(_USER_BY_ID, user_id)
        return None if row is None else _target(row)

    async def create_token(
        self, *, token_hash: bytes, user_id: UserId, expires_at: datetime, event: AuditEvent
    ) -> bool:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_LOCK_ENABLED_USER, user_id) is None:
                return False
            await conn.execute(_INSERT_TOKEN, token_hash, user_id, event.occurred_at, expires_at)
            await insert_event(conn, event)
        return True

    async def find_target(self, token_hash: bytes, *, now: datetime) -> ResetTarget | None:
        async with translate_errors(), self._pool.acquire() as conn:
            user_id = await conn.fetchval(_TOKEN_USER, token_hash, now)
            row = None if user_id is None else await conn.fetchrow(_ENABLED_TARGET, user_id)
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
            token_user = await conn.fetchval(_TOKEN_USER, token_hash, now)
            if token_user is None:
                return None
            user_id = await conn.fetchval(_LOCK_TOKEN_USER, token_user)
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
