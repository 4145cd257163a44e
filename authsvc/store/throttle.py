"""SQL for login-attempt counters (see migrations 0006 and 0008)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import asyncpg

from authsvc.core.models import AuditEvent, BucketCount
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors

__all__ = ["PgLoginThrottleStore"]

_ENSURE_BUCKETS = """
INSERT INTO login_failures (bucket, failures, window_started_at)
SELECT unnest($1::text[]), 0, $2
ON CONFLICT (bucket) DO NOTHING
"""
# In bucket order, so two attempts locking the same buckets never deadlock.
_LOCK_BUCKETS = """
SELECT bucket, failures, pending, window_started_at FROM login_failures
WHERE bucket = ANY($1::text[]) ORDER BY bucket FOR UPDATE
"""
_RESTART_WINDOW = """
UPDATE login_failures SET failures = 0, pending = 0, window_started_at = $2
WHERE bucket = ANY($1::text[])
"""
_TAKE_SLOT = "UPDATE login_failures SET pending = pending + 1 WHERE bucket = ANY($1::text[])"
# Settling gives the slot back; a failure counts, a success clears the account's count.
_SETTLE = """
UPDATE login_failures SET
    pending = GREATEST(pending - 1, 0),
    failures = CASE WHEN $2 THEN failures + 1
                    WHEN bucket = $3 THEN 0
                    ELSE failures END
WHERE bucket = ANY($1::text[])
"""


class PgLoginThrottleStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def try_take_slot(
        self,
        buckets: list[str],
        *,
        now: datetime,
        window: timedelta,
        may_take: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        """Lock the buckets (restarting passed windows) and, if `may_take` says so, take a
        slot in each, in one transaction. Returns the counts it judged."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_ENSURE_BUCKETS, buckets, now)
            counts = {
                row["bucket"]: BucketCount(
                    failures=row["failures"],
                    pending=row["pending"],
                    window_started_at=row["window_started_at"],
                )
                for row in await conn.fetch(_LOCK_BUCKETS, buckets)
            }
            passed = [b for b, c in counts.items() if c.window_started_at <= now - window]
            if passed:
                await conn.execute(_RESTART_WINDOW, passed, now)
                fresh = BucketCount(failures=0, pending=0, window_started_at=now)
                counts.update(dict.fromkeys(passed, fresh))
            if may_take(counts):
                await conn.execute(_TAKE_SLOT, buckets)
        return counts

    async def settle(
        self,
        buckets: list[str],
        *,
        failed: bool,
        account_bucket: str,
        event: AuditEvent | None = None,
    ) -> None:
        """Give back an attempt's slot: a failure counts (and `event` is audited with it), a
        success clears the account's count."""
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_SETTLE, buckets, failed, account_bucket)
            if event is not None:
                await insert_event(conn, event)

    async def audit(self, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_event(conn, event)
