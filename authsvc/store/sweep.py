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

# SKIP LOCKED: a row a request is working on is left for the next pass.
# `id = ANY(ARRAY(...))`, not `id IN (...)`: the planner ignores the LIMIT in an IN
# sub-select's estimate and hash-joins over the whole table; an array of ids is
# looked up through the primary key.
#
# Refresh tokens go first, in batches of their own, and a session only once it has
# none left: a cascade from a long-lived session could delete thousands of tokens in
# one statement. A token past its own expiry (and the refresh grace period after it)
# is deleted even while its session lives (a rotated token is kept until then, so a
# replay is recognised as reuse while the token could still have been used); every
# token of an idle-expired session has expired too. A revoked session's tokens go when
# the session's retention ends.
_DELETE_EXPIRED_TOKENS = """
DELETE FROM refresh_tokens WHERE id = ANY(ARRAY(
    SELECT id FROM refresh_tokens WHERE expires_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
# Through an array of session ids too: a join is hashed over every token.
_DELETE_TOKENS_OF_REVOKED_SESSIONS = """
DELETE FROM refresh_tokens WHERE id = ANY(ARRAY(
    SELECT id FROM refresh_tokens WHERE session_id = ANY(ARRAY(
        SELECT id FROM sessions WHERE revoked_at <= $1 LIMIT $2
    ))
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
# Revoked sessions are not "expired": they stay for the revoked retention.
# `OFFSET 0` keeps the NOT EXISTS a per-row probe of the session_id index: without it
# the planner turns it into an anti-join over a sequential scan of every token.
_DELETE_EXPIRED_SESSIONS = """
DELETE FROM sessions WHERE id = ANY(ARRAY(
    SELECT id FROM sessions s WHERE idle_expires_at <= $1 AND revoked_at IS NULL
      AND NOT EXISTS (SELECT FROM refresh_tokens t WHERE t.session_id = s.id OFFSET 0)
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_DELETE_REVOKED_SESSIONS = """
DELETE FROM sessions WHERE id = ANY(ARRAY(
    SELECT id FROM sessions s WHERE revoked_at <= $1
      AND NOT EXISTS (SELECT FROM refresh_tokens t WHERE t.session_id = s.id OFFSET 0)
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""


# The audit trail refuses deletes outside a transaction marked as the retention sweep
# (migrations/0010).
_MARK_AUDIT_RETENTION_SWEEP = "SET LOCAL authsvc.audit_retention_sweep = 'on'"
_DELETE_OLD_AUDIT_EVENTS = """
DELETE FROM audit_events WHERE id = ANY(ARRAY(
    SELECT id FROM audit_events WHERE occurred_at <= $1 LIMIT $2
))
"""
# Attempts whose process died before they settled (see domain/throttle.py).
_DELETE_STALE_LOGIN_ATTEMPTS = """
DELETE FROM login_attempts_in_flight WHERE attempt_id = ANY(ARRAY(
    SELECT attempt_id FROM login_attempts_in_flight WHERE admitted_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
# Buckets differ in window length (migration 0013); $1 is now less the shortest window,
# which narrows the index scan to rows that may have passed.
_DELETE_PAST_LOGIN_FAILURES = """
DELETE FROM login_failures WHERE bucket = ANY(ARRAY(
    SELECT bucket FROM login_failures
    WHERE window_started_at <= $1 AND window_started_at + window_length <= $3
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_DELETE_FORGOTTEN_ADDRESSES = """
DELETE FROM login_known_addresses WHERE pair_bucket = ANY(ARRAY(
    SELECT pair_bucket FROM login_known_addresses WHERE last_success_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
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
        tokens_expired_before: datetime,
        revoked_before: datetime,
        audit_before: datetime,
        failures_before: datetime,
        attempts_before: datetime,
        known_addresses_before: datetime,
        batch_size: int,
    ) -> SweepCounts:
        """Delete at most batch_size rows of each kind, each statement its own transaction."""
        conn = self._conn
        async with translate_errors():
            expired_tokens = await conn.execute(
                _DELETE_EXPIRED_TOKENS, tokens_expired_before, batch_size
            )
            revoked_tokens = await conn.execute(
                _DELETE_TOKENS_OF_REVOKED_SESSIONS, revoked_before, batch_size
            )
            expired = await conn.execute(_DELETE_EXPIRED_SESSIONS, now, batch_size)
            revoked = await conn.execute(_DELETE_REVOKED_SESSIONS, revoked_before, batch_size)
            async with conn.transaction():
                await conn.execute(_MARK_AUDIT_RETENTION_SWEEP)
                audit = await conn.execute(_DELETE_OLD_AUDIT_EVENTS, audit_before, batch_size)
            failures = await conn.execute(
                _DELETE_PAST_LOGIN_FAILURES, failures_before, batch_size, now
            )
            addresses = await conn.execute(
                _DELETE_FORGOTTEN_ADDRESSES, known_addresses_before, batch_size
            )
            attempts = await conn.execute(_DELETE_STALE_LOGIN_ATTEMPTS, attempts_before, batch_size)
        return SweepCounts(
            expired_sessions=_count(expired),
            revoked_sessions=_count(revoked),
            refresh_tokens=_count(expired_tokens) + _count(revoked_tokens),
            audit_events=_count(audit),
            login_failures=_count(failures),
            stale_login_attempts=_count(attempts),
            known_addresses=_count(addresses),
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
