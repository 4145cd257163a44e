"""SQL for the expiry sweeper: small batches that never wait on live traffic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

from authsvc.core.models import SweepCounts
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection, try_session_advisory_lock

__all__ = ["SWEEP_LOCK_KEY", "PgSweepStore", "SweepPass"]

# Arbitrary constant shared by every replica: "authsvc sweep".
SWEEP_LOCK_KEY = 0x61757468_0002

# SKIP LOCKED: a session a request is working on is left for the next pass.
# Revoked sessions are not "expired": they stay for the revoked retention.
# Refresh tokens go with their session (ON DELETE CASCADE): rotated ones are
# kept for the session's whole life so any replay is recognised as reuse.
# `id = ANY(ARRAY(...))`, not `id IN (...)`: the planner ignores the LIMIT in an IN
# sub-select's estimate and hash-joins over the whole table; an array of ids is
# looked up through the primary key.
_DELETE_EXPIRED_SESSIONS = """
DELETE FROM sessions WHERE id = ANY(ARRAY(
    SELECT id FROM sessions WHERE idle_expires_at <= $1 AND revoked_at IS NULL
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_DELETE_REVOKED_SESSIONS = """
DELETE FROM sessions WHERE id = ANY(ARRAY(
    SELECT id FROM sessions WHERE revoked_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""


_DELETE_OLD_AUDIT_EVENTS = """
DELETE FROM audit_events WHERE id IN (
    SELECT id FROM audit_events WHERE occurred_at <= $1 LIMIT $2
)
"""
_DELETE_PAST_LOGIN_FAILURES = """
DELETE FROM login_failures WHERE bucket IN (
    SELECT bucket FROM login_failures WHERE window_started_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class SweepPass:
    """A pass holding the sweep lock; its batches run on the lock's own connection,
    so a busy pool can neither stall a sweep nor be starved by one."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def delete_batch(
        self,
        *,
        now: datetime,
        revoked_before: datetime,
        audit_before: datetime,
        failures_before: datetime,
        batch_size: int,
    ) -> SweepCounts:
        """Delete at most batch_size rows of each kind, each statement its own transaction."""
        conn = self._conn
        async with translate_errors():
            expired = await conn.execute(_DELETE_EXPIRED_SESSIONS, now, batch_size)
            revoked = await conn.execute(_DELETE_REVOKED_SESSIONS, revoked_before, batch_size)
            audit = await conn.execute(_DELETE_OLD_AUDIT_EVENTS, audit_before, batch_size)
            failures = await conn.execute(_DELETE_PAST_LOGIN_FAILURES, failures_before, batch_size)
        return SweepCounts(
            expired_sessions=_count(expired),
            revoked_sessions=_count(revoked),
            audit_events=_count(audit),
            login_failures=_count(failures),
        )


class PgSweepStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[SweepPass | None]:
        """Hold the cluster-wide sweep lock for a pass; None if another replica has it."""
        async with (
            translate_errors(),
            try_session_advisory_lock(self._pool, SWEEP_LOCK_KEY) as conn,
        ):
            yield None if conn is None else SweepPass(conn)
