"""SQL for failed-login counters (see migrations/0006)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from authsvc.core.models import AuditEvent
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors

__all__ = ["PgLoginThrottleStore"]

_SELECT = "SELECT bucket, failures, window_started_at FROM login_failures WHERE bucket = ANY($1)"
# A bucket whose window has passed starts a new one at this failure.
_RECORD_FAILURE = """
INSERT INTO login_failures (bucket, failures, window_started_at)
SELECT unnest($1::text[]), 1, $2
ON CONFLICT (bucket) DO UPDATE SET
    failures = CASE WHEN login_failures.window_started_at <= $2 - $3::interval
                    THEN 1 ELSE login_failures.failures + 1 END,
    window_started_at = CASE WHEN login_failures.window_started_at <= $2 - $3::interval
                             THEN $2 ELSE login_failures.window_started_at END
"""
_RESET = "DELETE FROM login_failures WHERE bucket = $1"


class PgLoginThrottleStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def failures(self, buckets: list[str]) -> dict[str, tuple[int, datetime]]:
        """(failures, window start) of each bucket that has any."""
        async with translate_errors():
            rows = await self._pool.fetch(_SELECT, buckets)
        return {row["bucket"]: (row["failures"], row["window_started_at"]) for row in rows}

    async def record_failure(
        self, buckets: list[str], *, now: datetime, window: timedelta, event: AuditEvent
    ) -> None:
        """Count one failure in every bucket and audit it, atomically."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_RECORD_FAILURE, buckets, now, window)
            await insert_event(conn, event)

    async def reset(self, bucket: str) -> None:
        async with translate_errors():
            await self._pool.execute(_RESET, bucket)
