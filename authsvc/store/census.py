"""The one query behind the sampled session gauges (telemetry/sampler.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg

from authsvc.store.errors import translate_errors

__all__ = ["PgSessionCensus"]

# Live as everywhere else: unrevoked, idle deadline ahead. Reads the partial index on
# idle_expires_at (migration 0005); one row per distinct per-user count, so a handful.
_USERS_BY_LIVE_SESSIONS = """
SELECT live, count(*) AS users FROM (
    SELECT count(*) AS live FROM sessions
    WHERE revoked_at IS NULL AND idle_expires_at > $1
    GROUP BY user_id
) AS per_user
GROUP BY live
"""


class PgSessionCensus:
    """telemetry.sampler.SessionCensus in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def users_by_live_sessions(self, now: datetime) -> Mapping[int, int]:
        async with translate_errors():
            rows = await self._pool.fetch(_USERS_BY_LIVE_SESSIONS, now)
        return {int(row["live"]): int(row["users"]) for row in rows}
