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

__all__ = ["PgLoginThrottleStore"]

# Creates missing bucket rows and locks every row, new or old, in one statement and in
# bucket order, so two attempts (or an attempt and the sweeper, which skips locked rows)
# never deadlock. A row whose window has passed starts over with no failures. A window
# starts at its bucket's first failure (see _COUNT_FAILURE), so RetryInfo says nothing
# about earlier successful logins.
_LOCK_BUCKETS = """
INSERT INTO login_failures AS f (bucket, failures, window_started_at)
SELECT b, 0, $2::timestamptz FROM unnest($1::text[]) AS b ORDER BY b
ON CONFLICT (bucket) DO UPDATE SET
    failures = CASE WHEN f.window_started_at <= $2::timestamptz - $3::interval
                    THEN 0 ELSE f.failures END,
    window_started_at = CASE WHEN f.window_started_at <= $2::timestamptz - $3::interval
                             THEN $2::timestamptz ELSE f.window_started_at END
RETURNING bucket, failures, window_started_at
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
# (SET sees the row as it was: the first failure opens the window.)
_COUNT_FAILURE = """
UPDATE login_failures SET
    failures = failures + 1,
    window_started_at = CASE WHEN failures = 0 THEN $2 ELSE window_started_at END
WHERE bucket = ANY($1::text[])
"""
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
            rows = await conn.fetch(_LOCK_BUCKETS, buckets, now, window)
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
            await conn.execute(_LOCK_BUCKETS, buckets, now, window)
            await conn.execute(_COUNT_FAILURE, buckets, now)
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
