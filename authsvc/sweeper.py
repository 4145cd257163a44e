"""The expiry sweeper: deletes expired and long-revoked sessions and tokens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.models import SweepCounts
from authsvc.domain.throttle import IN_FLIGHT_EXPIRY

__all__ = ["SweepPass", "SweepStore", "Sweeper"]

_log = logging.getLogger(__name__)


class SweepPass(Protocol):
    async def delete_batch(
        self,
        *,
        now: datetime,
        tokens_expired_before: datetime,
        revoked_before: datetime,
        audit_before: datetime,
        failures_before: datetime,
        attempts_before: datetime,
        known_addresses_before: datetime,
        batch_size: int,
    ) -> SweepCounts: ...


class SweepStore(Protocol):
    def exclusive(self) -> AbstractAsyncContextManager[SweepPass | None]:
        """The cluster-wide sweep lock for one pass, or None if another replica holds it."""
        ...


class Sweeper:
    """Deletes refresh tokens past their expiry; expired sessions, and revoked
    ones after their retention, with their tokens; audit events past their
    retention; login-failure counters whose window has passed; addresses an account
    has not signed in from for the known-address retention. In bounded
    batches, so it never holds long locks.

    Only one replica sweeps at a time (a cluster-wide advisory lock); the
    others skip the pass. Between batches it pauses `batch_pause`: deleting a
    large backlog flat out fills the WAL and the disk queue, and live traffic's
    commits wait behind it (make bench --sweep-rows measures this).
    """

    def __init__(
        self,
        store: SweepStore,
        clock: Clock,
        *,
        interval: timedelta,
        batch_size: int,
        batch_pause: timedelta,
        revoked_retention: timedelta,
        audit_retention: timedelta,
        login_failure_window: timedelta,
        known_address_retention: timedelta,
        refresh_grace: timedelta,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._clock = clock
        self._batch_pause = batch_pause
        self._sleep = sleep
        self._interval = interval
        self._batch_size = batch_size
        self._revoked_retention = revoked_retention
        self._audit_retention = audit_retention
        self._login_failure_window = login_failure_window
        self._known_address_retention = known_address_retention
        self._refresh_grace = refresh_grace

    async def run_once(self) -> SweepCounts | None:
        """One full pass; None if another replica holds the sweep lock."""
        async with self._store.exclusive() as sweep:
            if sweep is None:
                return None
            total = SweepCounts()
            while True:
                now = self._clock.now()
                batch = await sweep.delete_batch(
                    now=now,
                    # A rotated token answers its grace period even past its expiry.
                    tokens_expired_before=now - self._refresh_grace,
                    revoked_before=now - self._revoked_retention,
                    audit_before=now - self._audit_retention,
                    failures_before=now - self._login_failure_window,
                    attempts_before=now - IN_FLIGHT_EXPIRY,
                    known_addresses_before=now - self._known_address_retention,
                    batch_size=self._batch_size,
                )
                total += batch
                if batch.largest < self._batch_size:
                    break
                await self._sleep(self._batch_pause.total_seconds())
        # A pass that found nothing is the common case, and not news.
        _log.log(
            logging.DEBUG if total == SweepCounts() else logging.INFO,
            "sweep finished",
            extra={
                "event": "sweep",
                "expired_sessions": total.expired_sessions,
                "revoked_sessions": total.revoked_sessions,
                "refresh_tokens": total.refresh_tokens,
                "audit_events": total.audit_events,
                "login_failures": total.login_failures,
                "stale_login_attempts": total.stale_login_attempts,
                "known_addresses": total.known_addresses,
            },
        )
        return total

    async def run(self) -> None:
        """Sweep every interval until cancelled. A failed pass (a database outage, or a
        bug) is logged and the next one runs on time: one bad pass must not end
        sweeping for the life of the process."""
        while True:
            try:
                await self.run_once()
            except DatabaseUnavailable as exc:
                _log.warning("sweep skipped: %s", exc, extra={"event": "sweep_skipped"})
            except Exception:
                _log.exception("sweep failed", extra={"event": "sweep_failed"})
            await self._sleep(self._interval.total_seconds())
