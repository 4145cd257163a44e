"""SQL for login-attempt counters (see migrations/0006)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from authsvc.core.models import AuditEvent
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors

__all__ = ["PgLoginThrottleStore"]

# One attempt in every bucket, atomically, before the password is checked: parallel
# guesses each see the counts of the ones before them. A bucket whose window has
# passed starts a new one at this attempt.
_COUNT_ATTEMPT = """
INSERT INTO login_failures (bucket, failures, window_started_at)
SELECT unnest($1::text[]), 1, $2
ON CONFLICT (bucket) DO UPDATE SET
    failures = CASE WHEN login_failures.window_started_at <= $2 - $3::interval
                    THEN 1 ELSE login_failures.failures + 1 END,
    window_started_at = CASE WHEN login_failures.window_started_at <= $2 - $3::interval
                             THEN $2 ELSE login_failures.window_started_at END
RETURNING bucket, failures, window_started_at
"""
# A success clears the account's count and takes its attempt back from the others.
_SETTLE_SUCCESS = """
WITH cleared AS (DELETE FROM login_failures WHERE bucket = $1)
UPDATE login_failures SET failures = GREATEST(failures - 1, 0) WHERE bucket = ANY($2::text[])
"""


class PgLoginThrottleStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def count_attempt(
        self, buckets: list[str], *, now: datetime, window: timedelta
    ) -> dict[str, tuple[int, datetime]]:
        """Count one attempt in every bucket: each one's (attempts, window start) after it."""
        async with translate_errors():
            rows = await self._pool.fetch(_COUNT_ATTEMPT, buckets, now, window)
        return {row["bucket"]: (row["failures"], row["window_started_at"]) for row in rows}

    async def settle_success(self, account_bucket: str, other_buckets: list[str]) -> None:
        async with translate_errors():
            await self._pool.execute(_SETTLE_SUCCESS, account_bucket, other_buckets)

    async def audit(self, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_event(conn, event)
