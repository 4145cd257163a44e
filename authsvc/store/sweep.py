"""SQL for the expiry sweeper: small batches that never wait long on live traffic.

Sessions are not deleted when they end: an expired one is marked ended (a tombstone, as
every other ending leaves), and tombstones are deleted once the ended-session retention
has passed (docs/design.md, "Session tombstones").

What is swept is declared once, in `SWEPT`: adding a table to the sweep is one entry
there (and its index, in a migration). Its name is the key of its count in what
`Sweeper.run_once` returns, in the `sweep` log line and in `authsvc sweep`'s output.

The same SQL runs on plain PostgreSQL and on Citus (migration 0028), where the per-user,
throttle and reset-token tables are distributed. Citus refuses the one-statement form
these tables had (`DELETE ... WHERE key = ANY(ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))`:
no row locks in a multi-shard subquery, no ctid in a recursively planned modification),
so a batch of such a table is two statements: `candidates` picks the keys of at most a
batch of rows, without locks; `statement` then acts on exactly those keys, re-checking
the predicate (a request may have refreshed the session or reset the window meanwhile),
in a transaction whose `lock_timeout` is short. The trade: SKIP LOCKED never waited and
passed over a row a request held; now the sweep waits up to the timeout, and a row held
past it sends the batch back to be acted on row by row, each held row waiting its own
timeout and left for the next pass. Requests hold these rows for milliseconds, so a
batch seldom waits at all; one wedged request costs a pass a fraction of a second per
row it holds, not a stall. Coordinator-local tables (audit trail, revocation log,
webhook outbox) keep their one statement with SKIP LOCKED where live traffic locks.
"""

from __future__ import annotations

import contextlib
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

# How long acting on a batch of picked keys may wait for a row a request holds. On
# Citus, SET LOCAL reaches the workers (which hold the rows) only when propagated; on
# plain PostgreSQL the citus.* setting is an inert placeholder.
_SHORT_LOCK_WAIT = (
    "SET LOCAL citus.propagate_set_commands = 'local'",
    "SET LOCAL lock_timeout = '100ms'",
)

# Parameters: a `candidates` query takes the kind's cutoffs ($1..$n) and the batch size
# last; its `statement` takes the picked keys, one array per column ($1..$k), then the
# cutoffs. Keys name a row by its whole primary key, distribution column included, so
# each shard's statement finds its rows through the key's index.
#
# Expired sessions are marked ended first, at the deadline that passed: the idle one,
# which is capped at the absolute one (then it is ABSOLUTE_TIMEOUT). Each is marked once
# (revoked_at IS NULL), so its expiry is counted once, by whichever replica marks it.
# Expiries stay off the revocation feed (migration 0019): nothing is appended here.
_EXPIRED_SESSIONS = """
SELECT user_id, id FROM sessions WHERE idle_expires_at <= $1 AND revoked_at IS NULL LIMIT $2
"""
_MARK_EXPIRED_SESSIONS = """
UPDATE sessions SET revoked_at = idle_expires_at, ended_by_kind = 'system',
    end_reason = CASE WHEN idle_expires_at < expires_at
        THEN 'idle_timeout' ELSE 'absolute_timeout' END,
    revoke_reason = CASE WHEN idle_expires_at < expires_at
        THEN 'idle_timeout' ELSE 'absolute_timeout' END
WHERE user_id = ANY($1::uuid[]) AND id = ANY($2::uuid[])
  AND idle_expires_at <= $3 AND revoked_at IS NULL
RETURNING created_at, idle_expires_at, expires_at
"""
# Refresh tokens go in batches of their own, and a session only once it has none left:
# a cascade from a long-lived session could delete thousands of tokens in one statement.
# A rotated token past its own expiry (and the refresh grace period after it) is deleted
# even while its session lives (it is kept until then, so a replay is recognised as
# reuse while the token could still have been used). A session's current (unrotated)
# token stays with its tombstone, so a Refresh with it is answered with the session's
# end reason; it goes when the session's retention ends.
_EXPIRED_TOKENS = """
SELECT user_id, id FROM refresh_tokens WHERE expires_at <= $1 AND rotated_at IS NOT NULL
LIMIT $2
"""
_DELETE_EXPIRED_TOKENS = """
DELETE FROM refresh_tokens WHERE user_id = ANY($1::uuid[]) AND id = ANY($2::uuid[])
  AND expires_at <= $3 AND rotated_at IS NOT NULL
"""
# The joins are on the user too: co-located on Citus, each runs on its shard. LATERAL with
# a LIMIT, so PostgreSQL probes each session's rows through an index instead of joining
# every token by a scan (tests/integration/test_query_plans.py). (A session ended before
# the cutoff stays so: the re-check is a key probe that never fails.)
_TOKENS_OF_REVOKED_SESSIONS = """
SELECT s.user_id, t.id FROM sessions s
CROSS JOIN LATERAL (
    SELECT id FROM refresh_tokens t WHERE t.user_id = s.user_id AND t.session_id = s.id
    LIMIT $2
) t
WHERE s.revoked_at <= $1 LIMIT $2
"""
_DELETE_TOKENS_OF_REVOKED_SESSIONS = """
DELETE FROM refresh_tokens t WHERE t.user_id = ANY($1::uuid[]) AND t.id = ANY($2::uuid[])
  AND EXISTS (SELECT FROM sessions s
              WHERE s.user_id = t.user_id AND s.id = t.session_id AND s.revoked_at <= $3)
"""
# A session's refresh lineage goes before its tombstone, in batches, as its tokens do: a
# month-long session has thousands of steps.
_LINEAGE_OF_ENDED_SESSIONS = """
SELECT s.user_id, s.id, l.id FROM sessions s
CROSS JOIN LATERAL (
    SELECT id FROM refresh_lineage l WHERE l.user_id = s.user_id AND l.session_id = s.id
    LIMIT $2
) l
WHERE s.revoked_at <= $1 LIMIT $2
"""
_DELETE_LINEAGE_OF_ENDED_SESSIONS = """
DELETE FROM refresh_lineage l
WHERE l.user_id = ANY($1::uuid[]) AND l.session_id = ANY($2::uuid[]) AND l.id = ANY($3::bigint[])
  AND EXISTS (SELECT FROM sessions s
              WHERE s.user_id = l.user_id AND s.id = l.session_id AND s.revoked_at <= $4)
"""
# Tombstones past the ended-session retention, whatever ended them (expiries included),
# once their tokens and lineage are gone.
_BARE_REVOKED_SESSIONS = """
SELECT s.user_id, s.id FROM sessions s
LEFT JOIN LATERAL (
    SELECT true AS present FROM refresh_tokens t
    WHERE t.user_id = s.user_id AND t.session_id = s.id LIMIT 1
) t ON true
LEFT JOIN LATERAL (
    SELECT true AS present FROM refresh_lineage l
    WHERE l.user_id = s.user_id AND l.session_id = s.id LIMIT 1
) l ON true
WHERE s.revoked_at <= $1 AND t.present IS NULL AND l.present IS NULL
LIMIT $2
"""
_DELETE_REVOKED_SESSIONS = """
DELETE FROM sessions WHERE user_id = ANY($1::uuid[]) AND id = ANY($2::uuid[])
  AND revoked_at <= $3
"""

# The audit trail refuses deletes outside a transaction marked as the retention sweep
# (migrations/0010). Coordinator-local: nothing but the sweep deletes from it.
_MARK_AUDIT_RETENTION_SWEEP = "SET LOCAL authsvc.audit_retention_sweep = 'on'"
_DELETE_OLD_AUDIT_EVENTS = """
DELETE FROM audit_events WHERE id = ANY(ARRAY(
    SELECT id FROM audit_events WHERE occurred_at <= $1 LIMIT $2
))
"""
# Attempts whose process died before they settled (see domain/throttle.py).
_STALE_LOGIN_ATTEMPTS = """
SELECT bucket, attempt_id FROM login_attempts_in_flight WHERE admitted_at <= $1 LIMIT $2
"""
_DELETE_STALE_LOGIN_ATTEMPTS = """
DELETE FROM login_attempts_in_flight
WHERE bucket = ANY($1::text[]) AND attempt_id = ANY($2::uuid[]) AND admitted_at <= $3
"""
# Buckets differ in window length (migration 0013); $1 is now less the shortest window,
# which narrows the index scan to rows that may have passed.
# The re-check is that the window has not moved since it was picked (a use after it
# passed starts a new one): Citus refuses `window_started_at + window_length` (a STABLE
# operator on columns) in a DELETE, which would run it on the workers.
_PAST_LOGIN_FAILURES = """
SELECT bucket, window_started_at FROM login_failures
WHERE window_started_at <= $1 AND window_started_at + window_length <= $2
LIMIT $3
"""
_DELETE_PAST_LOGIN_FAILURES = """
DELETE FROM login_failures WHERE bucket = ANY($1::text[])
  AND window_started_at = ANY($2::timestamptz[]) AND window_started_at <= $3
"""
_FORGOTTEN_ADDRESSES = """
SELECT pair_bucket FROM login_known_addresses WHERE last_success_at <= $1 LIMIT $2
"""
_DELETE_FORGOTTEN_ADDRESSES = """
DELETE FROM login_known_addresses
WHERE pair_bucket = ANY($1::text[]) AND last_success_at <= $2
"""
_EXPIRED_RESET_TOKENS = """
SELECT token_hash FROM password_reset_tokens WHERE expires_at <= $1 LIMIT $2
"""
_DELETE_EXPIRED_RESET_TOKENS = """
DELETE FROM password_reset_tokens WHERE token_hash = ANY($1::bytea[]) AND expires_at <= $2
"""
_EXPIRED_PENDING_LOGINS = """
SELECT user_id, token_hash FROM pending_logins WHERE expires_at <= $1 LIMIT $2
"""
_DELETE_EXPIRED_PENDING_LOGINS = """
DELETE FROM pending_logins WHERE user_id = ANY($1::uuid[]) AND token_hash = ANY($2::bytea[])
  AND expires_at <= $3
"""
# WebAuthn ceremonies begun and never finished (migration 0031).
_EXPIRED_WEBAUTHN_CHALLENGES = """
SELECT id FROM webauthn_challenges WHERE expires_at <= $1 LIMIT $2
"""
_DELETE_EXPIRED_WEBAUTHN_CHALLENGES = """
DELETE FROM webauthn_challenges WHERE id = ANY($1::uuid[]) AND expires_at <= $2
"""
# Coordinator-local. Migration 0014's trigger records the highest id deleted, so a feed
# reader whose cursor is below it knows it may have missed entries.
_DELETE_OLD_REVOCATIONS = """
DELETE FROM revocation_log WHERE id = ANY(ARRAY(
    SELECT id FROM revocation_log WHERE revoked_at <= $1 LIMIT $2
))
"""

# Coordinator-local. Pending deliveries stay, however old: the worker settles each one.
# SKIP LOCKED: a delivery the worker is sending is left for the next pass.
_DELETE_SETTLED_WEBHOOK_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id = ANY(ARRAY(
    SELECT id FROM webhook_deliveries WHERE state <> 'pending' AND last_attempt_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""

# TOTP enrolments never confirmed (migration 0030), through user_factors_enrolment_expiry.
_EXPIRED_ENROLMENTS = """
SELECT user_id, id FROM user_factors
WHERE enrolment_expires_at <= $1 AND confirmed_at IS NULL LIMIT $2
"""
_DELETE_EXPIRED_ENROLMENTS = """
DELETE FROM user_factors WHERE user_id = ANY($1::uuid[]) AND id = ANY($2::uuid[])
  AND enrolment_expires_at <= $3 AND confirmed_at IS NULL
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Swept:
    """One kind of row the sweeper deletes (or, for expired sessions, marks ended), one
    batch per statement run."""

    # The key of its count: stable, since logs and scripts read it.
    name: str
    # Deletes at most a batch of rows; its command tag's count is the rows deleted. With
    # `candidates`, it acts on the picked keys, re-checking the predicate; else it picks
    # its own batch (a coordinator-local table).
    statement: str
    # The kind's cutoffs, its statements' parameters (the batch size follows in a pick).
    args: Callable[[SweepCutoffs], tuple[object, ...]]
    # Picks the keys of at most a batch of rows, without locks (see the module docstring).
    candidates: str | None = None
    # The cutoffs `statement` re-checks after the keys, when not all of `args`.
    recheck_args: Callable[[SweepCutoffs], tuple[object, ...]] | None = None
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
        candidates=_EXPIRED_SESSIONS,
        statement=_MARK_EXPIRED_SESSIONS,
        args=lambda cut: (cut.now,),
        marks_expired=True,
    ),
    Swept(
        name="refresh_tokens",
        candidates=_EXPIRED_TOKENS,
        statement=_DELETE_EXPIRED_TOKENS,
        args=lambda cut: (cut.tokens_expired_before,),
    ),
    Swept(
        name="revoked_session_tokens",
        candidates=_TOKENS_OF_REVOKED_SESSIONS,
        statement=_DELETE_TOKENS_OF_REVOKED_SESSIONS,
        args=lambda cut: (cut.ended_before,),
    ),
    Swept(
        name="ended_session_lineage",
        candidates=_LINEAGE_OF_ENDED_SESSIONS,
        statement=_DELETE_LINEAGE_OF_ENDED_SESSIONS,
        args=lambda cut: (cut.ended_before,),
    ),
    Swept(
        name="revoked_sessions",
        candidates=_BARE_REVOKED_SESSIONS,
        statement=_DELETE_REVOKED_SESSIONS,
        args=lambda cut: (cut.ended_before,),
    ),
    Swept(
        name="audit_events",
        statement=_DELETE_OLD_AUDIT_EVENTS,
        args=lambda cut: (cut.audit_before,),
        setup=_MARK_AUDIT_RETENTION_SWEEP,
    ),
    Swept(
        name="login_failures",
        candidates=_PAST_LOGIN_FAILURES,
        statement=_DELETE_PAST_LOGIN_FAILURES,
        args=lambda cut: (cut.failures_before, cut.now),
        recheck_args=lambda cut: (cut.failures_before,),
    ),
    Swept(
        name="known_addresses",
        candidates=_FORGOTTEN_ADDRESSES,
        statement=_DELETE_FORGOTTEN_ADDRESSES,
        args=lambda cut: (cut.known_addresses_before,),
    ),
    Swept(
        name="stale_login_attempts",
        candidates=_STALE_LOGIN_ATTEMPTS,
        statement=_DELETE_STALE_LOGIN_ATTEMPTS,
        args=lambda cut: (cut.attempts_before,),
    ),
    Swept(
        name="password_reset_tokens",
        candidates=_EXPIRED_RESET_TOKENS,
        statement=_DELETE_EXPIRED_RESET_TOKENS,
        args=lambda cut: (cut.now,),
    ),
    Swept(
        name="pending_logins",
        candidates=_EXPIRED_PENDING_LOGINS,
        statement=_DELETE_EXPIRED_PENDING_LOGINS,
        args=lambda cut: (cut.now,),
    ),
    Swept(
        name="webauthn_challenges",
        candidates=_EXPIRED_WEBAUTHN_CHALLENGES,
        statement=_DELETE_EXPIRED_WEBAUTHN_CHALLENGES,
        args=lambda cut: (cut.now,),
    ),
    Swept(
        name="revocations",
        statement=_DELETE_OLD_REVOCATIONS,
        args=lambda cut: (cut.revocations_before,),
    ),
    Swept(
        name="webhook_deliveries",
        statement=_DELETE_SETTLED_WEBHOOK_DELIVERIES,
        args=lambda cut: (cut.webhook_deliveries_before,),
    ),
    Swept(
        name="factor_enrolments",
        candidates=_EXPIRED_ENROLMENTS,
        statement=_DELETE_EXPIRED_ENROLMENTS,
        args=lambda cut: (cut.now,),
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
                swept.name: await self._sweep(swept, cutoffs, batch_size, expired)
                for swept in SWEPT
            }
        return SweepBatch(counts=counts, expired_sessions=tuple(expired))

    async def _sweep(
        self, swept: Swept, cutoffs: SweepCutoffs, batch_size: int, expired: list[ExpiredSession]
    ) -> int:
        args = swept.args(cutoffs)
        if swept.candidates is None:
            return await self._run(swept, (*args, batch_size), expired)
        picked = await self._conn.fetch(swept.candidates, *args, batch_size)
        if not picked:
            return 0
        if swept.recheck_args is not None:
            args = swept.recheck_args(cutoffs)
        try:
            return await self._act(swept, picked, args, expired)
        except asyncpg.LockNotAvailableError:
            pass
        # A row a request holds must not cost the rest of the batch: each row alone, and
        # the held ones are left for the next pass.
        count = 0
        for row in picked:
            with contextlib.suppress(asyncpg.LockNotAvailableError):
                count += await self._act(swept, [row], args, expired)
        return count

    async def _act(
        self,
        swept: Swept,
        picked: list[asyncpg.Record],
        args: tuple[object, ...],
        expired: list[ExpiredSession],
    ) -> int:
        keys = tuple(list(column) for column in zip(*picked, strict=True))
        return await self._run(swept, (*keys, *args), expired, setup=_SHORT_LOCK_WAIT)

    async def _run(
        self,
        swept: Swept,
        args: tuple[object, ...],
        expired: list[ExpiredSession],
        *,
        setup: tuple[str, ...] = (),
    ) -> int:
        setup = (*setup, *([] if swept.setup is None else [swept.setup]))
        async with self._conn.transaction():
            for statement in setup:
                await self._conn.execute(statement)
            if not swept.marks_expired:
                return _count(await self._conn.execute(swept.statement, *args))
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
