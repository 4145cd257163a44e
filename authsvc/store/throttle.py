"""SQL for login throttling: failure counters (migration 0006) and attempts in flight
(migration 0008)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import asyncpg

from authsvc.core.models import AuditEvent, BucketCount
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection

__all__ = ["PgLoginThrottleStore"]

_ENSURE_BUCKETS = """
INSERT INTO login_failures (bucket, failures, window_started_at)
SELECT unnest($1::text[]), 0, $2
ON CONFLICT (bucket) DO NOTHING
"""
# Every bucket row is locked in bucket order, by admissions and failures alike, so two
# attempts on the same buckets never deadlock.
_LOCK_BUCKETS = """
SELECT bucket, failures, window_started_at FROM login_failures
WHERE bucket = ANY($1::text[]) ORDER BY bucket FOR UPDATE
"""
_RESTART_WINDOWS = """
UPDATE login_failures SET failures = 0, window_started_at = $2::timestamptz
WHERE bucket = ANY($1::text[]) AND window_started_at <= $2::timestamptz - $3::interval
"""
_COUNT_IN_FLIGHT = """
SELECT bucket, count(*) AS in_flight FROM login_attempts_in_flight
WHERE bucket = ANY($1::text[]) AND admitted_at > $2
GROUP BY bucket
"""
_ADMIT = """
INSERT INTO login_attempts_in_flight (attempt_id, bucket, admitted_at)
SELECT $1, unnest($2::text[]), $3
"""
_FORGET_ATTEMPT = "DELETE FROM login_attempts_in_flight WHERE attempt_id = $1"
_COUNT_FAILURE = "UPDATE login_failures SET failures = failures + 1 WHERE bucket = ANY($1::text[])"
_CLEAR_FAILURES = "UPDATE login_failures SET failures = 0 WHERE bucket = $1"


class PgLoginThrottleStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def try_admit(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        *,
        now: datetime,
        window: timedelta,
        in_flight_since: datetime,
        may_admit: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        """Lock the buckets (starting a new window where the last has passed) and, if
        `may_admit` says so, record the attempt in flight in each, in one transaction.
        Returns the counts it judged; attempts admitted before `in_flight_since` are
        taken for dead and not counted."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await _lock_buckets(conn, buckets, now=now, window=window)
            in_flight: dict[str, int] = {
                row["bucket"]: row["in_flight"]
                for row in await conn.fetch(_COUNT_IN_FLIGHT, buckets, in_flight_since)
            }
            counts = {
                row["bucket"]: BucketCount(
                    failures=row["failures"],
                    in_flight=in_flight.get(row["bucket"], 0),
                    window_started_at=row["window_started_at"],
                )
                for row in rows
            }
            if may_admit(counts):
                await conn.execute(_ADMIT, attempt_id, buckets, now)
        return counts

    async def count_failure(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        *,
        now: datetime,
        window: timedelta,
        event: AuditEvent,
    ) -> None:
        """Settle a failed attempt: one more failure in every bucket, audited."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await _lock_buckets(conn, buckets, now=now, window=window)
            await conn.execute(_COUNT_FAILURE, buckets)
            await conn.execute(_FORGET_ATTEMPT, attempt_id)
            await insert_event(conn, event)

    async def clear_failures(self, attempt_id: uuid.UUID, account_bucket: str) -> None:
        """Settle a successful attempt: the account's failures are forgiven."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLEAR_FAILURES, account_bucket)
            await conn.execute(_FORGET_ATTEMPT, attempt_id)

    async def forget(self, attempt_id: uuid.UUID) -> None:
        """An attempt that ended without an outcome (an error, a cancelled call)."""
        async with translate_errors():
            await self._pool.execute(_FORGET_ATTEMPT, attempt_id)

    async def audit(self, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_event(conn, event)


async def _lock_buckets(
    conn: Connection, buckets: list[str], *, now: datetime, window: timedelta
) -> list[asyncpg.Record]:
    """Create missing bucket rows and lock them all, in order; restart passed windows."""
    while True:
        await conn.execute(_ENSURE_BUCKETS, buckets, now)
        rows = await conn.fetch(_LOCK_BUCKETS, buckets)
        # The sweeper may delete a row between the two statements: then again.
        if len(rows) == len(buckets):
            break
    if any(row["window_started_at"] <= now - window for row in rows):
        await conn.execute(_RESTART_WINDOWS, buckets, now, window)
        rows = await conn.fetch(_LOCK_BUCKETS, buckets)
    return list(rows)
