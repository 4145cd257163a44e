"""The expiry sweeper: marks expired sessions ended, and deletes what has outlived its
retention, batch by batch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.models import (
    EXPIRED_SESSIONS,
    ExpiredSession,
    SweepBatch,
    SweepCounts,
    SweepCutoffs,
)
from authsvc.domain.throttle import IN_FLIGHT_EXPIRY
from authsvc.telemetry import metrics

__all__ = ["SweepPass", "SweepStore", "Sweeper"]

_log = logging.getLogger(__name__)


class SweepPass(Protocol):
    """One sweep pass, holding the cluster-wide sweep lock."""

    async def delete_batch(self, cutoffs: SweepCutoffs, *, batch_size: int) -> SweepBatch:
        """Mark ended at most `batch_size` sessions whose idle deadline passed unended
        (`expired_sessions`: revoked_at the deadline, IDLE_TIMEOUT or ABSOLUTE_TIMEOUT, by
        the system; each once, so counted once), and delete at most `batch_size` rows of
        each other kind the store sweeps, each older than its cutoff. Returns how many of
        each (every kind, zeros included), with the sessions it marked. Rows live
        traffic has locked are skipped, never waited for; each kind is deleted in its own
        transaction, so a failure keeps the kinds already deleted. A count equal to
        `batch_size` means more of that kind may be waiting. DatabaseUnavailable if the
        database cannot be reached."""
        ...


class SweepStore(Protocol):
    def exclusive(self) -> AbstractAsyncContextManager[SweepPass | None]:
        """Hold the cluster-wide sweep lock for the block: a pass, or None at once if
        another replica (or process) holds it. The lock is freed when the block ends,
        however it ends. DatabaseUnavailable if the database cannot be reached."""
        ...


class Sweeper:
    """Marks expired sessions ended (tombstones), and deletes what has outlived its use
    (rotated tokens, tombstones after their retention, old audit events, spent throttle
    counters: the store declares which), in bounded batches, so it never holds long locks.

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
        ended_session_retention: timedelta,
        audit_retention: timedelta,
        login_failure_window: timedelta,
        known_address_retention: timedelta,
        refresh_grace: timedelta,
        revocation_retention: timedelta,
        webhook_delivery_retention: timedelta,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._clock = clock
        self._batch_pause = batch_pause
        self._sleep = sleep
        self._interval = interval
        self._batch_size = batch_size
        self._ended_session_retention = ended_session_retention
        self._audit_retention = audit_retention
        self._login_failure_window = login_failure_window
        self._known_address_retention = known_address_retention
        self._refresh_grace = refresh_grace
        self._revocation_retention = revocation_retention
        self._webhook_delivery_retention = webhook_delivery_retention

    async def run_once(self) -> SweepCounts | None:
        """One full pass: how many rows of each kind it deleted; None if another replica
        holds the sweep lock."""
        async with self._store.exclusive() as sweep:
            if sweep is None:
                return None
            started = time.perf_counter()
            total: dict[str, int] = {}
            while True:
                batch = await sweep.delete_batch(
                    self._cutoffs(self._clock.now()), batch_size=self._batch_size
                )
                for kind, count in batch.counts.items():
                    total[kind] = total.get(kind, 0) + count
                    if count and kind != EXPIRED_SESSIONS:
                        metrics.SWEEPER_ROWS_DELETED.labels(table=kind).inc(count)
                _count_expiries(batch.expired_sessions)
                if max(batch.counts.values(), default=0) < self._batch_size:
                    break
                await self._sleep(self._batch_pause.total_seconds())
            metrics.SWEEPER_PASS_DURATION.observe(time.perf_counter() - started)
        # A pass that found nothing is the common case, and not news.
        _log.log(
            logging.INFO if any(total.values()) else logging.DEBUG,
            "sweep finished",
            extra={"event": "sweep", **total},
        )
        return total

    def _cutoffs(self, now: datetime) -> SweepCutoffs:
        return SweepCutoffs(
            now=now,
            # A rotated token answers its grace period even past its expiry.
            tokens_expired_before=now - self._refresh_grace,
            ended_before=now - self._ended_session_retention,
            audit_before=now - self._audit_retention,
            failures_before=now - self._login_failure_window,
            attempts_before=now - IN_FLIGHT_EXPIRY,
            known_addresses_before=now - self._known_address_retention,
            revocations_before=now - self._revocation_retention,
            webhook_deliveries_before=now - self._webhook_delivery_retention,
        )

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


def _count_expiries(expired: tuple[ExpiredSession, ...]) -> None:
    """An expiry is no event: it is counted when the sweeper marks its session ended, once
    (the marking skips sessions ended already), not when the tombstone is deleted."""
    for session in expired:
        if session.reached_lifetime:
            reason, ended_at = "absolute_timeout", session.expires_at
        else:
            reason, ended_at = "idle_timeout", session.idle_expires_at
        metrics.session_ended(reason, (ended_at - session.created_at).total_seconds())
