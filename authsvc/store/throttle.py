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

__all__ = ["PgLoginThrottleStore", "forgive_failures"]

# Creates missing bucket rows and locks every row, new or old, in one statement and in
# bucket order, so two attempts (or an attempt and the sweeper, which skips locked rows)
# never deadlock. A row whose window has passed starts over with no failures. A window
# starts at its bucket's first failure (see _COUNT_FAILURE), so RetryInfo says nothing
# about earlier successful logins.
_LOCK_BUCKETS = """
INSERT INTO login_failures AS f (bucket, failures, window_started_at, window_length)
SELECT b.bucket, 0, $2::timestamptz, b.window_length
FROM unnest($1::text[], $3::interval[]) AS b (bucket, window_length) ORDER BY b.bucket
ON CONFLICT (bucket) DO UPDATE SET
    failures = CASE WHEN f.window_started_at <= $2::timestamptz - excluded.window_length
                    THEN 0 ELSE f.failures END,
    window_started_at = CASE WHEN f.window_started_at <= $2::timestamptz - excluded.window_length
                             THEN $2::timestamptz ELSE f.window_started_at END,
    window_length = excluded.window_length
RETURNING bucket, failures, window_started_at
"""
# Read without locking or writing: a refused attempt (the common case under attack) must
# cost one index read, not a row version per bucket. A window that has passed reads as 0.
_READ_BUCKETS = """
SELECT b.bucket,
       CASE WHEN f.window_started_at <= $2::timestamptz - b.window_length
            THEN 0 ELSE f.failures END AS failures,
       f.window_started_at
FROM unnest($1::text[], $3::interval[]) AS b (bucket, window_length)
JOIN login_failures f ON f.bucket = b.bucket
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
# Locks in bucket order, like _LOCK_BUCKETS: two logins clearing and admitting the same
# buckets would otherwise deadlock.
_CLEAR_FAILURES = """
UPDATE login_failures SET failures = 0 WHERE bucket = ANY(ARRAY(
    SELECT bucket FROM login_failures WHERE bucket = ANY($1::text[])
    ORDER BY bucket FOR UPDATE
))
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
    """Forgive the buckets' failures, on `conn` inside the caller's transaction."""
    await conn.execute(_CLEAR_FAILURES, buckets)


def _counts(rows: list[asyncpg.Record], in_flight: Mapping[str, int]) -> dict[str, BucketCount]:
    return {
        row["bucket"]: BucketCount(
            failures=row["failures"],
            in_flight=in_flight.get(row["bucket"], 0),
            window_started_at=row["window_started_at"],
        )
        for row in rows
    }


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
        async with translate_errors(), self._pool.acquire() as conn:
            rows = await conn.fetch(_READ_BUCKETS, buckets, now, windows)
            in_flight: dict[str, int] = {}
            if rows and in_flight_since is not None:
                in_flight = {
                    row["bucket"]: row["in_flight"]
                    for row in await conn.fetch(_COUNT_IN_FLIGHT, buckets, in_flight_since)
                }
        return _counts(rows, in_flight)

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
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_LOCK_BUCKETS, buckets, now, windows)
            in_flight: dict[str, int] = {
                row["bucket"]: row["in_flight"]
                for row in await conn.fetch(_COUNT_IN_FLIGHT, buckets, in_flight_since)
            }
            counts = _counts(rows, in_flight)
            if may_admit(counts):
                await conn.execute(_ADMIT, attempt_id, buckets, now)
        return counts

    async def take(
        self,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        may_take: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            counts = _counts(await conn.fetch(_LOCK_BUCKETS, buckets, now, windows), {})
            if may_take(counts):
                await conn.execute(_COUNT_FAILURE, buckets, now)
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
            await conn.execute(_LOCK_BUCKETS, buckets, now, windows)
            await conn.execute(_COUNT_FAILURE, buckets, now)
            await conn.execute(_FORGET_ATTEMPT, attempt_id)
            await insert_event(conn, event)

    async def clear_failures(
        self, attempt_id: uuid.UUID, cleared: list[str], known_address: str, *, now: datetime
    ) -> None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await forgive_failures(conn, cleared)
            await conn.execute(_REMEMBER_ADDRESS, known_address, now)
            await conn.execute(_FORGET_ATTEMPT, attempt_id)

    async def is_known_address(self, pair: str, *, since: datetime) -> bool:
        async with translate_errors():
            return bool(await self._pool.fetchval(_IS_KNOWN_ADDRESS, pair, since))

    async def forget(self, attempt_id: uuid.UUID) -> None:
        async with translate_errors():
            await self._pool.execute(_FORGET_ATTEMPT, attempt_id)
