"""SQL for login throttling: failure counters (migration 0006) and attempts in flight
(migration 0008)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import asyncpg

from authsvc.core.models import AuditEvent, BucketCount
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection

__all__ = ["PgLoginThrottleStore", "forgive_failures"]

# Every statement here addresses one bucket ($1 = bucket): the three throttle tables are
# distributed by it on Citus (co-located), so each is a router query on one shard. Work
# on several buckets is one statement per bucket in bucket order, in one transaction:
# rows are locked in that order, so two attempts (or an attempt and the sweeper, which
# skips locked rows) never deadlock.

# Creates the bucket's row if missing and locks it. A row whose window has passed starts
# over with no failures. A window starts at its bucket's first failure (see
# _COUNT_FAILURE), so RetryInfo says nothing about earlier successful logins. "Has passed"
# is `now - start >= length`, not `start <= now - length`: Citus refuses functions that
# are not immutable in DO UPDATE, and timestamptz - interval depends on the time zone.
_LOCK_BUCKET = """
INSERT INTO login_failures AS f (bucket, failures, window_started_at, window_length)
VALUES ($1, 0, $2::timestamptz, $3::interval)
ON CONFLICT (bucket) DO UPDATE SET
    failures = CASE WHEN $2::timestamptz - f.window_started_at >= excluded.window_length
                    THEN 0 ELSE f.failures END,
    window_started_at = CASE WHEN $2::timestamptz - f.window_started_at >= excluded.window_length
                             THEN $2::timestamptz ELSE f.window_started_at END,
    window_length = excluded.window_length
RETURNING failures, window_started_at
"""
# Read without locking or writing: a refused attempt (the common case under attack) must
# cost one index read per bucket, not a row version. A window that has passed reads as
# 0. The attempts in flight since $4 (none asked: NULL) come in the same trip; no row if
# the bucket was never counted.
_READ_BUCKET = """
SELECT CASE WHEN f.window_started_at <= $2::timestamptz - $3::interval
            THEN 0 ELSE f.failures END AS failures,
       f.window_started_at,
       CASE WHEN $4::timestamptz IS NULL THEN 0 ELSE (
           SELECT count(*) FROM login_attempts_in_flight a
           WHERE a.bucket = $1 AND a.admitted_at > $4::timestamptz
       ) END AS in_flight
FROM login_failures f WHERE f.bucket = $1
"""
# Records the attempt in flight and counts the others, after the bucket's lock: a new
# statement, so its snapshot holds every admission committed by the lock's previous
# holders (one statement with the lock would count from before its wait). The caller
# rolls back if the counts refuse the attempt. Its own row is left out by id: PostgreSQL
# runs the CTE in the statement's snapshot, which cannot see the row, but Citus runs it as
# a statement of its own first, whose row the count then would see.
_ADMIT_COUNTING_OTHERS = """
WITH admitted AS (
    INSERT INTO login_attempts_in_flight (attempt_id, bucket, admitted_at)
    VALUES ($2, $1, $3)
)
SELECT count(*) FROM login_attempts_in_flight
WHERE bucket = $1 AND admitted_at > $4 AND attempt_id <> $2
"""
_FORGET_ATTEMPT = "DELETE FROM login_attempts_in_flight WHERE bucket = $1 AND attempt_id = $2"
# One more failure in the bucket, locking it, with the attempt settled ($4). A missing or
# passed window starts at this failure, as does a window with none counted yet.
_COUNT_FAILURE = """
WITH settled AS (
    DELETE FROM login_attempts_in_flight WHERE bucket = $1 AND attempt_id = $4
)
INSERT INTO login_failures AS f (bucket, failures, window_started_at, window_length)
VALUES ($1, 1, $2::timestamptz, $3::interval)
ON CONFLICT (bucket) DO UPDATE SET
    failures = CASE WHEN $2::timestamptz - f.window_started_at >= excluded.window_length
                    THEN 1 ELSE f.failures + 1 END,
    window_started_at = CASE
        WHEN $2::timestamptz - f.window_started_at >= excluded.window_length
          OR f.failures = 0 THEN $2::timestamptz
        ELSE f.window_started_at END,
    window_length = excluded.window_length
"""
# One use more in a bucket _LOCK_BUCKET locked (SET sees the row as it was: the first use
# opens the window).
_COUNT_USE = """
UPDATE login_failures SET
    failures = failures + 1,
    window_started_at = CASE WHEN failures = 0 THEN $2 ELSE window_started_at END
WHERE bucket = $1
"""
_CLEAR_FAILURES = "UPDATE login_failures SET failures = 0 WHERE bucket = $1"
# A success's forgiveness in one bucket, with the attempt settled ($2).
_FORGIVE_SETTLING = """
WITH settled AS (
    DELETE FROM login_attempts_in_flight WHERE bucket = $1 AND attempt_id = $2
)
UPDATE login_failures SET failures = 0 WHERE bucket = $1
"""
# The same in the pair bucket, which also names the known address ($3 = now): the
# tables share the bucket's shard.
_FORGIVE_PAIR_SETTLING = """
WITH settled AS (
    DELETE FROM login_attempts_in_flight WHERE bucket = $1 AND attempt_id = $2
), remembered AS (
    INSERT INTO login_known_addresses (pair_bucket, last_success_at) VALUES ($1, $3)
    ON CONFLICT (pair_bucket) DO UPDATE SET last_success_at = excluded.last_success_at
)
UPDATE login_failures SET failures = 0 WHERE bucket = $1
"""
_REMEMBER_ADDRESS = """
INSERT INTO login_known_addresses (pair_bucket, last_success_at) VALUES ($1, $2)
ON CONFLICT (pair_bucket) DO UPDATE SET last_success_at = excluded.last_success_at
"""
_IS_KNOWN_ADDRESS = """
SELECT EXISTS (
    SELECT FROM login_known_addresses WHERE pair_bucket = $1 AND last_success_at > $2
)
"""


async def forgive_failures(conn: Connection, buckets: list[str]) -> None:
    """Forgive the buckets' failures, on `conn` inside the caller's transaction, one
    statement per bucket in bucket order."""
    for bucket in sorted(buckets):
        await conn.execute(_CLEAR_FAILURES, bucket)


class _Refused(Exception):
    """Rolls back an admission its counts refuse."""

    def __init__(self, counts: Mapping[str, BucketCount]) -> None:
        super().__init__()
        self.counts = counts


def _atomically(conn: Connection, statements: int) -> AbstractAsyncContextManager[object]:
    """A transaction for more than one statement; one is atomic on its own (and saves the
    BEGIN and COMMIT trips)."""
    return conn.transaction() if statements > 1 else contextlib.nullcontext()


async def _lock_bucket(
    conn: Connection, bucket: str, now: datetime, window: timedelta
) -> asyncpg.Record:
    row = await conn.fetchrow(_LOCK_BUCKET, bucket, now, window)
    assert row is not None  # an upsert returns its row, inserted or updated
    return row


def _count(row: asyncpg.Record, in_flight: int) -> BucketCount:
    return BucketCount(
        failures=row["failures"], in_flight=in_flight, window_started_at=row["window_started_at"]
    )


class PgLoginThrottleStore:
    """domain.throttle.LoginThrottleStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read(
        self,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        in_flight_since: datetime | None = None,
    ) -> Mapping[str, BucketCount]:
        counts: dict[str, BucketCount] = {}
        async with translate_errors(), self._pool.acquire() as conn:
            for bucket, window in zip(buckets, windows, strict=True):
                row = await conn.fetchrow(_READ_BUCKET, bucket, now, window, in_flight_since)
                if row is not None:
                    counts[bucket] = _count(row, row["in_flight"])
        return counts

    async def try_admit(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        in_flight_since: datetime,
        may_admit: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        order = sorted(zip(buckets, windows, strict=True))
        try:
            async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
                locked = [await _lock_bucket(conn, b, now, w) for b, w in order]
                counts = {
                    bucket: _count(
                        row,
                        await conn.fetchval(
                            _ADMIT_COUNTING_OTHERS, bucket, attempt_id, now, in_flight_since
                        ),
                    )
                    for (bucket, _), row in zip(order, locked, strict=True)
                }
                if not may_admit(counts):
                    raise _Refused(counts)
        except _Refused as refused:
            # Rolled back: nothing recorded (a passed window's starting over, undone,
            # reads the same).
            return refused.counts
        return counts

    async def take(
        self,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        may_take: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        order = sorted(zip(buckets, windows, strict=True))
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            counts = {b: _count(await _lock_bucket(conn, b, now, w), 0) for b, w in order}
            if may_take(counts):
                for bucket, _ in order:
                    await conn.execute(_COUNT_USE, bucket, now)
        return counts

    async def count_failure(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        event: AuditEvent,
    ) -> None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            for bucket, window in sorted(zip(buckets, windows, strict=True)):
                await conn.execute(_COUNT_FAILURE, bucket, now, window, attempt_id)
            await insert_event(conn, event)

    async def clear_failures(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        cleared: list[str],
        known_address: str,
        *,
        now: datetime,
    ) -> None:
        forgiven = set(cleared)
        settling = sorted({*buckets, *cleared})
        remembered_apart = known_address not in forgiven
        statements = len(settling) + remembered_apart
        async with (
            translate_errors(),
            self._pool.acquire() as conn,
            _atomically(conn, statements),
        ):
            for bucket in settling:
                if bucket == known_address and bucket in forgiven:
                    await conn.execute(_FORGIVE_PAIR_SETTLING, bucket, attempt_id, now)
                elif bucket in forgiven:
                    await conn.execute(_FORGIVE_SETTLING, bucket, attempt_id)
                else:
                    await conn.execute(_FORGET_ATTEMPT, bucket, attempt_id)
            if remembered_apart:
                await conn.execute(_REMEMBER_ADDRESS, known_address, now)

    async def is_known_address(self, pair: str, *, since: datetime) -> bool:
        async with translate_errors():
            return bool(await self._pool.fetchval(_IS_KNOWN_ADDRESS, pair, since))

    async def forget(self, attempt_id: uuid.UUID, buckets: list[str]) -> None:
        if not buckets:
            return
        async with (
            translate_errors(),
            self._pool.acquire() as conn,
            _atomically(conn, len(buckets)),
        ):
            for bucket in sorted(buckets):
                await conn.execute(_FORGET_ATTEMPT, bucket, attempt_id)
