"""The revocation feed: every session ending, in commit order, as each process hears it.

PostgreSQL keeps the log (migrations/0014: one row per ending, appended in the ending's
own transaction, cursors in commit order, NOTIFY on commit). Each process runs one
`RevocationFeed` on a dedicated connection: it reads the log after its cursor on every
(re)connect, then on every notification and every poll, and hands each batch to its
observers (the liveness cache, WatchRevocations streams). It is *current* while it has
heard from PostgreSQL within `staleness` and has read everything up to what it heard;
when it is not, nothing may be answered from what it fed. See docs/design.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.models import Revocation, RevocationLogBounds

__all__ = [
    "FeedObserver",
    "ListeningLog",
    "RevocationBatch",
    "RevocationFeed",
    "RevocationListener",
    "RevocationLog",
]

_log = logging.getLogger(__name__)


class RevocationLog(Protocol):
    """The revocation log, read-only. Rows are appended by the endings themselves (in the
    ending's transaction), so a row is visible exactly when its ending committed.

    Commit order: an entry with a higher cursor never becomes visible before one with a
    lower cursor, so a reader that has seen cursor N will never later find an entry at or
    below N that it did not see. Every method raises DatabaseUnavailable when the database
    cannot be reached in time."""

    async def read_after(self, cursor: int, *, limit: int) -> list[Revocation]:
        """The committed entries with a cursor above `cursor`, ascending, at most `limit`.
        Fewer than `limit` means none further was committed when it read. Entries swept
        away are simply absent: compare `cursor` with `bounds().swept_through` to know."""
        ...

    async def read_ended_since(
        self, since: datetime, *, after_cursor: int, limit: int
    ) -> list[Revocation]:
        """A page of the snapshot: entries whose session ended at or after `since`, with a
        cursor above `after_cursor`, ascending, at most `limit`. Page by passing the last
        cursor read; a short page is the last. To continue live, take `bounds().latest`
        before the first page and read after the greater of it and the last cursor read."""
        ...

    async def bounds(self) -> RevocationLogBounds:
        """The latest committed cursor and the cursor the sweeper has swept through."""
        ...


class ListeningLog(RevocationLog, Protocol):
    """The log on a dedicated connection that listens for its appends."""

    async def wait(self, seconds: float) -> bool:
        """Return True once an append was notified since the last call (at once if one
        was already), False after `seconds` without one. DatabaseUnavailable as soon as
        the connection is lost."""
        ...


class RevocationListener(Protocol):
    def connect(self) -> AbstractAsyncContextManager[ListeningLog]:
        """Open a dedicated connection (never a pooled one: LISTEN does not survive a
        pool's reuse or a transaction-pooling proxy) that listens for appends before the
        block starts; closed when the block ends. DatabaseUnavailable if it cannot."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationBatch:
    """What the feed applied in one step.

    Normally `revocations` are every entry with a cursor in (`after`, `cursor`],
    ascending. A snapshot batch (`is_snapshot`: the first one, or one after the feed
    lost track for longer than the log's retention) holds instead every session ended
    within the feed's window; observers that promise continuity must start over."""

    revocations: tuple[Revocation, ...]
    after: int
    cursor: int
    is_snapshot: bool


class FeedObserver(Protocol):
    """Told everything a `RevocationFeed` applies. Both methods run on the event loop, in
    the feed's task, in order: they must not block, await or raise (queue and return)."""

    def applied(self, batch: RevocationBatch) -> None:
        """A batch, in cursor order after every earlier batch."""
        ...

    def currency_changed(self, current: bool) -> None:
        """The feed became stale (False) or current again (True). `is_current` is exact;
        this may tell of staleness up to a poll after it began, so never use it in place
        of `is_current`."""
        ...


_PAGE = 1000
_MAX_BACKOFF = 5.0


class RevocationFeed:
    """This process's view of the revocation log, fed by one dedicated connection.

    It owns its task: `start()` begins it and `aclose()` ends it. On every (re)connect it
    first reads the log after its cursor (or takes a snapshot of the sessions ended within
    `window` if it has none yet, or the log was swept past it), then waits for
    notifications, and polls the latest cursor every quarter of `staleness`, which also
    catches a lost notification. It reconnects with backoff.

    `is_current`: connected, caught up with the latest cursor it heard of, and it heard
    from PostgreSQL less than `staleness` ago. A process uses what the feed applied only
    while it is current.
    """

    def __init__(
        self,
        listener: RevocationListener,
        clock: Clock,
        *,
        window: timedelta,
        staleness: timedelta,
    ) -> None:
        self._listener = listener
        self._clock = clock
        self._window = window
        self._staleness = staleness.total_seconds()
        self._observers: list[FeedObserver] = []
        self._cursor = 0
        self._has_cursor = False
        # Loop time of the last round trip that left the feed caught up; None: not current.
        self._caught_up_at: float | None = None
        # Loop time it was last caught up (or started), kept through outages: its lag.
        self._last_caught_up: float | None = None
        self._reported_current = False
        self._task: asyncio.Task[None] | None = None
        self._became_current = asyncio.Event()

    @property
    def cursor(self) -> int:
        """The cursor of the last entry applied (0 before the first batch)."""
        return self._cursor

    @property
    def is_current(self) -> bool:
        heard = self._caught_up_at
        return heard is not None and _now() - heard < self._staleness

    @property
    def lag(self) -> float:
        """Seconds since the feed last knew it had all the log had: under a poll interval
        while current, growing while it is disconnected or catching up; 0 before start."""
        since = self._last_caught_up
        return 0.0 if since is None else _now() - since

    def observe(self, observer: FeedObserver) -> Callable[[], None]:
        """Tell `observer` every batch from now on and each change of currency; returns
        the function that stops it. An observer added while the feed runs sees no batch
        applied before: read the log up to `cursor` for those."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def start(self) -> None:
        if self._task is None:
            self._last_caught_up = _now()
            self._task = asyncio.create_task(self._run(), name="revocation-feed")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_stale()

    async def wait_current(self) -> None:
        """Return once the feed is current."""
        while not self.is_current:
            await self._became_current.wait()
            self._became_current.clear()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self._listener.connect() as log:
                    delay = 0.1
                    await self._follow(log)
            except DatabaseUnavailable as exc:
                _log.warning(
                    "revocation feed disconnected, retrying in %.1fs: %s",
                    delay,
                    exc.detail,
                    extra={"event": "revocation_feed_disconnected"},
                )
            except TimeoutError:
                _log.warning(
                    "revocation feed's database did not answer, reconnecting",
                    extra={"event": "revocation_feed_disconnected"},
                )
            except Exception:
                # A bug must not end the feed for the life of the process: say so, go on.
                _log.exception("revocation feed failed", extra={"event": "revocation_feed_failed"})
            self._set_stale()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _follow(self, log: ListeningLog) -> None:
        poll = self._staleness / 4
        # Each round trip is bounded, so a connection that hangs goes stale, not silent.
        async with asyncio.timeout(self._staleness):
            await self._catch_up(log, await log.bounds())
        while True:
            notified = await log.wait(poll)
            async with asyncio.timeout(self._staleness):
                if notified:
                    # The common case: one read, for what the notification announced.
                    await self._read_after(log)
                    self._heard()
                else:
                    # Also catches a lost notification, and a log swept past the cursor.
                    await self._catch_up(log, await log.bounds())

    async def _catch_up(self, log: ListeningLog, bounds: RevocationLogBounds) -> None:
        if not self._has_cursor or self._cursor < bounds.swept_through:
            await self._snapshot(log, bounds)
        if bounds.latest > self._cursor:
            await self._read_after(log)
        self._heard()

    async def _read_after(self, log: ListeningLog) -> None:
        """Apply every entry after the cursor, page by page, until a short page."""
        while True:
            page = await log.read_after(self._cursor, limit=_PAGE)
            if page:
                self._apply(tuple(page), after=self._cursor, is_snapshot=False)
            if len(page) < _PAGE:
                return

    async def _snapshot(self, log: ListeningLog, bounds: RevocationLogBounds) -> None:
        since = self._clock.now() - self._window
        found: list[Revocation] = []
        last = 0
        while True:
            page = await log.read_ended_since(since, after_cursor=last, limit=_PAGE)
            found.extend(page)
            if page:
                last = page[-1].cursor
            if len(page) < _PAGE:
                break
        after, self._has_cursor = self._cursor, True
        self._cursor = max(bounds.latest, last)
        self._publish(
            RevocationBatch(
                revocations=tuple(found), after=after, cursor=self._cursor, is_snapshot=True
            )
        )

    def _apply(self, revocations: tuple[Revocation, ...], *, after: int, is_snapshot: bool) -> None:
        self._cursor = revocations[-1].cursor
        self._publish(
            RevocationBatch(
                revocations=revocations, after=after, cursor=self._cursor, is_snapshot=is_snapshot
            )
        )

    def _publish(self, batch: RevocationBatch) -> None:
        for observer in tuple(self._observers):
            observer.applied(batch)

    def _heard(self) -> None:
        """A round trip found nothing beyond the cursor: current until `staleness` passes."""
        self._caught_up_at = self._last_caught_up = _now()
        self._became_current.set()
        if not self._reported_current:
            self._reported_current = True
            for observer in tuple(self._observers):
                observer.currency_changed(True)

    def _set_stale(self) -> None:
        self._caught_up_at = None
        if self._reported_current:
            self._reported_current = False
            for observer in tuple(self._observers):
                observer.currency_changed(False)


def _now() -> float:
    # Real time even under a FrozenClock: staleness is about the connection, not the session.
    return asyncio.get_running_loop().time()
