"""Refused attempts, aggregated: one audit row and one log line per client address and
interval, with a count, instead of one of each per refusal.

A client hammering a limit at hundreds of calls a second must cost the service a
counter in memory, not a row and a log line per call (a day of that from one client
was about 12 GB of audit rows). The first refusal from an address in an interval is
logged at once, so an operator sees an attack start; its audit row, with the count
and the interval's last refusal, is written when the interval ends. Counts are per
process: with several replicas, each writes its own row per address and interval.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.models import AuditEvent, RequestOrigin

__all__ = ["FLUSH_INTERVAL", "RefusalLog", "RefusalStore"]

_log = logging.getLogger(__name__)

FLUSH_INTERVAL = timedelta(minutes=1)
# Distinct clients tracked per interval; past it, refusals from new clients are
# counted under one "(many addresses)" entry, so an address spray cannot grow memory.
_MAX_CLIENTS = 10_000
_MANY_ADDRESSES = "(many addresses)"
# First-refusal WARNINGs per interval, all clients together: past it, new clients are
# only counted (and summed up at the flush), so a spray of addresses cannot flood the log.
_MAX_FIRST_WARNINGS = 100


class RefusalStore(Protocol):
    async def audit_many(self, events: list[AuditEvent]) -> None:
        """Append the events to the audit trail in one round trip, all or none.
        DatabaseUnavailable, with none written, when the database cannot be reached."""
        ...


@dataclass(slots=True)
class _Tally:
    first: AuditEvent
    last_at: datetime
    count: int = 1
    limits: set[str] = field(default_factory=set)


class RefusalLog:
    """Counts refusals per (event, address) and writes them once per interval.

    Owns its flushing task: `start()` it, and `aclose()` writes what is left."""

    __slots__ = ("_interval", "_pending", "_store", "_task", "_warned")

    def __init__(self, store: RefusalStore, *, interval: timedelta = FLUSH_INTERVAL) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[tuple[str, str], _Tally] = {}
        self._warned = 0
        self._task: asyncio.Task[None] | None = None

    def note(self, refused: AuditEvent, limits: list[str], *, client: str) -> None:
        """Count one refusal of `refused.event` from `client` (the throttle's name for
        its address: an IPv6 client's whole /64, so rotating addresses within it gains
        nothing); `limits` names which limits refused it ("pair", "ip", never a bucket)."""
        key = (refused.event, client)
        if key not in self._pending and len(self._pending) >= _MAX_CLIENTS:
            key = (refused.event, _MANY_ADDRESSES)
            refused = replace(refused, origin=RequestOrigin(ip_address=_MANY_ADDRESSES))
        tally = self._pending.get(key)
        if tally is None:
            # Only what the audit row needs: a user agent can be kilobytes.
            first = replace(refused, origin=RequestOrigin(ip_address=refused.origin.ip_address))
            self._pending[key] = _Tally(first=first, last_at=refused.occurred_at)
            if self._warned < _MAX_FIRST_WARNINGS:
                self._warned += 1
                _log.warning(
                    "throttled",
                    extra={"event": "throttled", "refused": refused.event, "limit": limits},
                )
        else:
            tally.count += 1
            tally.last_at = refused.occurred_at
        self._pending[key].limits.update(limits)

    async def flush(self) -> int:
        """Write one audit row per (event, address) counted since the last flush; return
        how many. If the database cannot take them, the counts wait for the next flush."""
        pending, self._pending = self._pending, {}
        self._warned = 0
        if not pending:
            return 0
        events = [
            replace(
                tally.first,
                detail={
                    **tally.first.detail,
                    "count": tally.count,
                    "last_at": tally.last_at.isoformat(),
                    "limits": sorted(tally.limits),
                },
            )
            for tally in pending.values()
        ]
        try:
            await self._store.audit_many(events)
        except Exception:
            for key, tally in pending.items():
                self._merge_back(key, tally)
            raise
        for tally in pending.values():
            if tally.count > 1:
                _log.warning(
                    "throttled %d times",
                    tally.count,
                    extra={
                        "event": "throttled",
                        "refused": tally.first.event,
                        "count": tally.count,
                    },
                )
        return len(events)

    def _merge_back(self, key: tuple[str, str], tally: _Tally) -> None:
        newer = self._pending.get(key)
        if newer is None:
            self._pending[key] = tally
            return
        tally.count += newer.count
        tally.last_at = newer.last_at
        tally.limits |= newer.limits
        self._pending[key] = tally

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        """Stop flushing on the interval, then write what is counted (best effort)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except Exception as exc:
            _log.warning("refusal counts lost: %r", exc, extra={"event": "refusals_lost"})

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval.total_seconds())
            try:
                await self.flush()
            except DatabaseUnavailable as exc:
                _log.warning(
                    "refusal counts not written yet: %s", exc, extra={"event": "refusals_held"}
                )
            except Exception:
                # A full disk, say: keep counting, and try again next interval.
                _log.exception("refusal counts not written", extra={"event": "refusals_held"})
