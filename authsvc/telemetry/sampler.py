"""The periodic sample behind the session gauges: one query per interval, never per scrape.

One process samples (the one that sweeps); the gauges are the database's figures, so
every replica that samples reports the same numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import DatabaseUnavailable
from authsvc.telemetry import metrics

__all__ = ["Sampler", "SessionCensus"]

_log = logging.getLogger(__name__)


class SessionCensus(Protocol):
    async def users_by_live_sessions(self, now: datetime) -> Mapping[int, int]:
        """For each number of live sessions (unrevoked, idle deadline after `now`) some
        user has, how many users have exactly that many; numbers no user has are absent.
        One query. DatabaseUnavailable if the database cannot be reached."""
        ...


class Sampler:
    """Sets the live-session gauges from the census every `interval`."""

    def __init__(self, census: SessionCensus, clock: Clock, *, interval: timedelta) -> None:
        self._census = census
        self._clock = clock
        self._interval = interval
        self._bands = tuple(
            (metrics.USERS_BY_LIVE_SESSIONS.labels(sessions=label), least, most)
            for label, least, most in metrics.SESSION_COUNT_BANDS
        )

    async def sample(self) -> None:
        """Take one sample now. DatabaseUnavailable leaves the last one in place."""
        users_by_count = await self._census.users_by_live_sessions(self._clock.now())
        metrics.LIVE_SESSIONS.set(sum(count * users for count, users in users_by_count.items()))
        metrics.USERS_WITH_LIVE_SESSIONS.set(sum(users_by_count.values()))
        for gauge, least, most in self._bands:
            gauge.set(
                sum(
                    users
                    for count, users in users_by_count.items()
                    if least <= count and (most is None or count <= most)
                )
            )

    async def run(self) -> None:
        """Sample every interval until cancelled; a failed sample is logged and skipped."""
        while True:
            try:
                await self.sample()
            except DatabaseUnavailable as exc:
                _log.warning("sample skipped: %s", exc, extra={"event": "metrics_sample_skipped"})
            except Exception:
                _log.exception("sample failed", extra={"event": "metrics_sample_failed"})
            await asyncio.sleep(self._interval.total_seconds())
