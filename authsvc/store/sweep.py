"""SQL for the expiry sweeper: small batches that never wait on live traffic.

Sessions are not deleted when they end: an expired one is marked ended (a tombstone, as
every other ending leaves), and tombstones are deleted once the ended-session retention
has passed (docs/design.md, "Session tombstones").

What is swept is declared once, in `SWEPT`: adding a table to the sweep is one entry
there (and its index, in a migration). Its name is the key of its count in what
`Sweeper.run_once` returns, in the `sweep` log line and in `authsvc sweep`'s output.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from authsvc.core.models import EXPIRED_SESSIONS, ExpiredSession, SweepBatch, SweepCutoffs
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection, try_session_advisory_lock

__all__ = ["SWEEP_LOCK_KEY", "SWEPT", "PgSweepPass", "PgSweepStore", "Swept"]

# Arbitrary constant shared by every replica: "authsvc sweep".
SWEEP_LOCK_KEY = 0x61757468_0002

# SKIP LOCKED: a row a request is working on is left for the next pass.
# `id = ANY(ARRAY(...))`, not `id IN (...)`: the planner ignores the LIMIT in an IN
# sub-select's estimate and hash-joins over the whole table; an array of ids is
# looked up through the primary key.
#
# Expired sessions are marked ended first, at the deadline that passed: the idle one,
# which is capped at the absolute one (then it is ABSOLUTE_TIMEOUT). Each is marked once
# (revoked_at IS NULL), so its expiry is counted once, by whichever replica marks it.
# Expiries stay off the revocation feed (migration 0019): nothing is appended here.
_MARK_EXPIRED_SESSIONS = """
UPDATE sessions SET revoked_at = idle_expires_at, ended_by_kind = 'system',
    end_reason = CASE WHEN idle_expires_at < expires_at
        THEN 'idle_timeout' ELSE 'absolute_timeout' END,
    revoke_reason = CASE WHEN idle_expires_at < expires_at
        THEN 'idle_timeout' ELSE 'absolute_timeout' END
WHERE id = ANY(ARRAY(
    SELECT id FROM sessions WHERE idle_expires_at <= $1 AND revoked_at IS NULL
    LIMIT $2 FOR UPDATE SKIP LOCKED
)) AND revoked_at IS NULL
RETURNING created_at, idle_expires_at, expires_at
"""
# Refresh tokens go in batches of their own, and a session only once it has none left:
# a cascade from a long-lived session could delete thousands of tokens in one statement.
# A rotated token past its own expiry (and the refresh grace period after it) is deleted
# even while its session lives (it is kept until then, so a replay is recognised as
# reuse while the token could still have been used). A session's current (unrotated)
# token stays with its tombstone, so a Refresh with it is answered with the session's
# end reason; it goes when the session's retention ends.
# By ctid: the primary key leads with user_id (migration 0025).
_DELETE_EXPIRED_TOKENS = """
DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM refresh_tokens WHERE expires_at <= $1 AND rotated_at IS NOT NULL
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
# Through an array of session ids too: a join is hashed over every token.
_DELETE_TOKENS_OF_REVOKED_SESSIONS = """
DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM refresh_tokens WHERE session_id = ANY(ARRAY(
        SELECT id FROM sessions WHERE revoked_at <= $1 LIMIT $2
    ))
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
# A session's refresh lineage goes before its tombstone, in batches, as its tokens do: a
# month-long session has thousands of steps. By ctid: the table's one index leads with
# session_id (migration 0020). The EXISTS passes over sessions already bare, so each batch
# progresses. The index leads with (user_id, session_id) since migration 0025: a session
# is named by both, each ended session's steps probed through it (a LATERAL: a join would
# be hashed over every step).
_DELETE_LINEAGE_OF_ENDED_SESSIONS = """
DELETE FROM refresh_lineage WHERE ctid = ANY(ARRAY(
    SELECT steps.ctid FROM (
        SELECT user_id, id FROM sessions s
        WHERE revoked_at <= $1
          AND EXISTS (SELECT FROM refresh_lineage l
                      WHERE l.user_id = s.user_id AND l.session_id = s.id OFFSET 0)
        LIMIT $2
    ) ended CROSS JOIN LATERAL (
        SELECT ctid FROM refresh_lineage l
        WHERE l.user_id = ended.user_id AND l.session_id = ended.id
        FOR UPDATE SKIP LOCKED
    ) steps
    LIMIT $2
))
"""
# Tombstones past the ended-session retention, whatever ended them (expiries included).
# `OFFSET 0` keeps the NOT EXISTS a per-row probe of the session_id index: without it
# the planner turns it into an anti-join over a sequential scan of every token.
_DELETE_REVOKED_SESSIONS = """
DELETE FROM sessions WHERE id = ANY(ARRAY(
    SELECT id FROM sessions s WHERE revoked_at <= $1
      AND NOT EXISTS (SELECT FROM refresh_tokens t WHERE t.session_id = s.id OFFSET 0)
      AND NOT EXISTS (SELECT FROM refresh_lineage l
                      WHERE l.user_id = s.user_id AND l.session_id = s.id OFFSET 0)
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
_DELETE_EXPIRED_RESET_TOKENS = """
DELETE FROM password_reset_tokens WHERE token_hash = ANY(ARRAY(
    SELECT token_hash FROM password_reset_tokens WHERE expires_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
# Migration 0014's trigger records the highest id deleted, so a feed reader whose cursor
# is below it knows it may have missed entries.
_DELETE_OLD_REVOCATIONS = """
DELETE FROM revocation_log WHERE id = ANY(ARRAY(
    SELECT id FROM revocation_log WHERE revoked_at <= $1 LIMIT $2
))
"""

# Pending deliveries stay, however old: the worker settles each one.
_DELETE_SETTLED_WEBHOOK_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id = ANY(ARRAY(
    SELECT id FROM webhook_deliveries WHERE state <> 'pending' AND last_attempt_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Swept:
    """One kind of row the sweeper deletes (or, for expired sessions, marks ended), one
    batch per statement run."""

    # The key of its count: stable, since logs and scripts read it.
    name: str
    # Deletes at most a batch of rows, picked with FOR UPDATE SKIP LOCKED where live
    # traffic may hold them; its command tag's count is the rows deleted.
    statement: str
    # The statement's parameters, from the batch's cutoffs and its batch size.
    args: Callable[[SweepCutoffs, int], tuple[object, ...]]
    # Run first, in the same transaction as the statement (else it runs on its own).
    setup: str | None = None
    # The statement marks sessions that expired unended as ended (it deletes nothing),
    # RETURNING created_at, idle_expires_at, expires_at of each.
    marks_expired: bool = False


# In order: expired sessions are marked before tokens are swept, and a session's tokens
# and lineage go before the session, so none is deleted by cascade.
SWEPT: tuple[Swept, ...] = (
    Swept(
        name=EXPIRED_SESSIONS,
        statement=_MARK_EXPIRED_SESSIONS,
        args=lambda cut, batch: (cut.now, batch),
        marks_expired=True,
    ),
    Swept(
        name="refresh_tokens",
        statement=_DELETE_EXPIRED_TOKENS,
        args=lambda cut, batch: (cut.tokens_expired_before, batch),
    ),
    Swept(
        name="revoked_session_tokens",
        statement=_DELETE_TOKENS_OF_REVOKED_SESSIONS,
        args=lambda cut, batch: (cut.ended_before, batch),
    ),
    Swept(
        name="ended_session_lineage",
        statement=_DELETE_LINEAGE_OF_ENDED_SESSIONS,
        args=lambda cut, batch: (cut.ended_before, batch),
    ),
    Swept(
        name="revoked_sessions",
        statement=_DELETE_REVOKED_SESSIONS,
        args=lambda cut, batch: (cut.ended_before, batch),
    ),
    Swept(
        name="audit_events",
        statement=_DELETE_OLD_AUDIT_EVENTS,
        args=lambda cut, batch: (cut.audit_before, batch),
        setup=_MARK_AUDIT_RETENTION_SWEEP,
    ),
    Swept(
        name="login_failures",
        statement=_DELETE_PAST_LOGIN_FAILURES,
        args=lambda cut, batch: (cut.failures_before, batch, cut.now),
    ),
    Swept(
        name="known_addresses",
        statement=_DELETE_FORGOTTEN_ADDRESSES,
        args=lambda cut, batch: (cut.known_addresses_before, batch),
    ),
    Swept(
        name="stale_login_attempts",
        statement=_DELETE_STALE_LOGIN_ATTEMPTS,
        args=lambda cut, batch: (cut.attempts_before, batch),
    ),
    Swept(
        name="password_reset_tokens",
        statement=_DELETE_EXPIRED_RESET_TOKENS,
        args=lambda cut, batch: (cut.now, batch),
    ),
    Swept(
        name="revocations",
        statement=_DELETE_OLD_REVOCATIONS,
        args=lambda cut, batch: (cut.revocations_before, batch),
    ),
    Swept(
        name="webhook_deliveries",
        statement=_DELETE_SETTLED_WEBHOOK_DELIVERIES,
        args=lambda cut, batch: (cut.webhook_deliveries_before, batch),
    ),
)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PgSweepPass:
    """Runs `SWEPT` on the sweep lock's own connection, so a busy pool can neither
    stall a sweep nor be starved by one."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def delete_batch(self, cutoffs: SweepCutoffs, *, batch_size: int) -> SweepBatch:
        expired: list[ExpiredSession] = []
        async with translate_errors():
            counts = {
                swept.name: await self._delete(swept, cutoffs, batch_size, expired)
                for swept in SWEPT
            }
        return SweepBatch(counts=counts, expired_sessions=tuple(expired))

    async def _delete(
        self, swept: Swept, cutoffs: SweepCutoffs, batch_size: int, expired: list[ExpiredSession]
    ) -> int:
        args = swept.args(cutoffs, batch_size)
        if swept.marks_expired:
            rows = await self._conn.fetch(swept.statement, *args)
            expired.extend(
                ExpiredSession(
                    created_at=row["created_at"],
                    idle_expires_at=row["idle_expires_at"],
                    expires_at=row["expires_at"],
                )
                for row in rows
            )
            return len(rows)
        if swept.setup is None:
            return _count(await self._conn.execute(swept.statement, *args))
        async with self._conn.transaction():
            await self._conn.execute(swept.setup)
            return _count(await self._conn.execute(swept.statement, *args))


class PgSweepStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[PgSweepPass | None]:
        async with (
            translate_errors(),
            try_session_advisory_lock(self._pool, SWEEP_LOCK_KEY) as conn,
        ):
            yield None if conn is None else PgSweepPass(conn)
