"""SQL for the account lifecycle: disabling, enabling and changing the password, each
with the ending of the account's sessions in one transaction.

Locking rule (with store/sessions.py's): a change that must end every session of an
account takes the account's row lock FOR UPDATE first, and only then, in a statement
of its own, ends the sessions. Creating a session takes FOR KEY SHARE on the same row
and checks the account there (see _INSERT_SESSION), so a session insert either
commits before the change reads the sessions, and is ended by it, or waits for the
change and sees it. An UPDATE alone would take a weaker lock that does not wait for
the insert's, and a single statement would read the sessions from a snapshot taken
before the wait.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from authsvc.core.models import (
    Account,
    AuditEvent,
    EndedSession,
    SessionEnder,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.store.admin import fetch_account
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection
from authsvc.store.sessions import end_user_sessions

__all__ = ["PgAccountStore", "set_password_hash"]

_LOCK_ACCOUNT = "SELECT password_hash FROM users WHERE id = $1 FOR UPDATE"
# Disabling a disabled account keeps its first disabling (time and note).
_DISABLE = """
UPDATE users SET
    disabled_reason = CASE WHEN disabled_at IS NULL THEN $3 ELSE disabled_reason END,
    updated_at = CASE WHEN disabled_at IS NULL THEN $2 ELSE updated_at END,
    disabled_at = COALESCE(disabled_at, $2)
WHERE id = $1
"""
_ENABLE = """
UPDATE users SET
    updated_at = CASE WHEN disabled_at IS NULL THEN updated_at ELSE $2 END,
    disabled_at = NULL,
    disabled_reason = ''
WHERE id = $1
RETURNING id
"""
_SET_PASSWORD_HASH = "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1"


async def set_password_hash(
    conn: Connection, user_id: UserId, password_hash: str, now: datetime
) -> None:
    """Replace the account's password hash on `conn`, inside the caller's transaction,
    which holds the account's row lock (ChangePassword's and ResetPassword's)."""
    await conn.execute(_SET_PASSWORD_HASH, user_id, password_hash, now)


async def _lock_account(conn: Connection, user_id: UserId) -> asyncpg.Record | None:
    return await conn.fetchrow(_LOCK_ACCOUNT, user_id)


class PgAccountStore:
    """domain.sessions.AccountStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def disable(
        self,
        user_id: UserId,
        *,
        now: datetime,
        reason: str,
        ender: SessionEnder,
        event: AuditEvent,
    ) -> tuple[Account, list[EndedSession]] | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await _lock_account(conn, user_id) is None:
                return None
            await conn.execute(_DISABLE, user_id, now, reason)
            # A statement of its own, after the lock: it sees every session committed
            # before the lock was granted.
            ended = await end_user_sessions(
                conn,
                user_id,
                now=now,
                revoke_reason=SessionEndReason.USER_DISABLED.value,
                ended_by=SessionEndReason.USER_DISABLED,
                ender=ender,
                event=event,
                keep=None,
            )
            account = await fetch_account(conn, user_id, now=now)
        assert account is not None  # locked above, in this transaction
        return account, ended

    async def enable(self, user_id: UserId, *, now: datetime, event: AuditEvent) -> Account | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_ENABLE, user_id, now) is None:
                return None
            await insert_event(conn, event)
            return await fetch_account(conn, user_id, now=now)

    async def change_password(
        self,
        user_id: UserId,
        *,
        verified_hash: str,
        new_hash: str,
        now: datetime,
        keep: SessionId,
        event: AuditEvent,
    ) -> list[EndedSession] | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            row = await _lock_account(conn, user_id)
            if row is None or row["password_hash"] != verified_hash:
                return None
            await set_password_hash(conn, user_id, new_hash, now)
            return await end_user_sessions(
                conn,
                user_id,
                now=now,
                revoke_reason=SessionEndReason.PASSWORD_CHANGED.value,
                ended_by=SessionEndReason.PASSWORD_CHANGED,
                # The user, from the session it keeps.
                ender=SessionEnder.user(keep),
                event=event,
                keep=keep,
            )

    async def record(self, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_event(conn, event)
