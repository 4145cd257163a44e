"""Migration 0024: a database whose log was appended by the trigger keeps every entry,
and after the upgrade each ending is appended once, by the store, after them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from authsvc.core.models import SYSTEM, AuditEvent, SessionEndReason, SessionId, UserId
from authsvc.store.migrate import apply_migrations, bundled_migrations
from authsvc.store.revocations import PgRevocationLog
from authsvc.store.sessions import PgSessionStore
from tests.conftest import NewDatabase, pool_on

pytestmark = pytest.mark.asyncio

_STORE_APPENDS = 24
_T0 = datetime(2025, 1, 1, tzinfo=UTC)

_USER = """
INSERT INTO users (id, email, password_hash, created_at, updated_at)
VALUES ($1, 'ada@example.com', 'hash', $2, $2)
"""
_SESSION = """
INSERT INTO sessions (
    id, user_id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name)
VALUES ($1, $2, $3::timestamptz, $3, $3 + interval '1 hour', $3 + interval '1 day', false,
    '', '', 'other', '', '', '')
"""
# What the previous release's logout ran; its trigger appended the entry.
_PREVIOUS_RELEASE_LOGOUT = """
UPDATE sessions SET revoked_at = $2, revoke_reason = 'logout', end_reason = 'user_logout',
    ended_by_kind = 'user', ended_by_session = id
WHERE id = $1 AND revoked_at IS NULL
"""


async def test_endings_before_and_after_the_upgrade_are_each_logged_once_in_order(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    user_id = uuid.uuid4()
    before, after = uuid.uuid4(), uuid.uuid4()
    now = _T0 + timedelta(minutes=5)
    async with pool_on(dsn, db_statement_timeout="30s") as pool:
        await apply_migrations(
            pool, [m for m in bundled_migrations() if m.version < _STORE_APPENDS]
        )
        await pool.execute(_USER, user_id, _T0)
        for session_id in (before, after):
            await pool.execute(_SESSION, session_id, user_id, _T0)
        await pool.execute(_PREVIOUS_RELEASE_LOGOUT, before, now)

        await apply_migrations(pool)
        store = PgSessionStore(pool)
        for session_id in (after, before):  # the second ended already: nothing more
            await store.revoke_session(
                UserId(user_id),
                SessionId(session_id),
                now=now,
                reason="revoked_by_user",
                ended_by=SessionEndReason.USER_REVOKED,
                ender=SYSTEM,
                event=AuditEvent(event="test", occurred_at=now),
            )
        logged = await PgRevocationLog(pool).read_after(0, limit=10)
        still_triggered = await pool.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'sessions_append_revocation'"
        )

    assert [(entry.session_id, entry.reason) for entry in logged] == [
        (before, SessionEndReason.USER_LOGOUT),
        (after, SessionEndReason.USER_REVOKED),
    ]
    assert logged[0].cursor < logged[1].cursor
    assert still_triggered == 0
