"""WatchRevocations' side of the revocation feed: one process's fan-out to its subscribers,
and each subscriber's stream (replay, then live revocations and heartbeats).

Fan-out costs O(1) per revocation plus one wake-up per waiting subscriber per batch, and no
database work: every subscriber reads the same ring of the latest revocations by its own
position in it. A subscriber that falls a whole ring behind is cut off (SubscriberTooSlow)
when it next reads, so a slow one holds up no one and costs a position, not a queue.
See docs/revocation-feed.md for the protocol a subscriber follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from authsvc.core.clock import Clock
from authsvc.core.errors import (
    CursorExpired,
    InvalidArgument,
    NotReady,
    ServerBusy,
    SubscriberTooSlow,
)
from authsvc.core.models import Revocation
from authsvc.domain.revocations import RevocationBatch, RevocationLog

__all__ = ["Heartbeat", "RevocationFanout", "RevocationWatch", "Subscription", "WatchEvent"]

# Rows per replay read: bounded memory however long the backlog.
_PAGE = 1000
# What a refused subscriber is told to wait; it may as well try another replica at once.
_BUSY_RETRY = timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """The stream is alive and every revocation up to `cursor` has been sent."""

    cursor: int
    sent_at: datetime


WatchEvent = Revocation | Heartbeat


class RevocationFanout:
    """One process's live revocations for its WatchRevocations subscribers; a FeedObserver.

    `capacity`: the ring's size, how many revocations a subscriber may fall behind before
    it is cut off. It must hold the feed's largest batch, or a burst would cut off even
    subscribers that keep up. `max_subscribers`: beyond it, subscribe() is ServerBusy.

    Continuity holds from the feed's first batch on. A later snapshot batch (the feed lost
    track for longer than the log's retention) breaks it: every subscription then ends
    with NotReady, and its subscriber resumes from its cursor through the database.
    """

    def __init__(self, *, capacity: int, max_subscribers: int) -> None:
        if capacity < 1 or max_subscribers < 1:
            raise ValueError("capacity and max_subscribers must be at least 1")
        self._ring: list[Revocation | None] = [None] * capacity
        self._capacity = capacity
        self._max_subscribers = max_subscribers
        # Revocations ever put in the ring: the position the next one takes.
        self._head = 0
        self._cursor = 0
        self._started = False
        # Bumped when continuity breaks: subscriptions of an older epoch end.
        self._epoch = 0
        self._closed = False
        self._subscribers = 0
        # One future all waiting subscribers share, resolved by the next batch.
        self._arrival: asyncio.Future[None] | None = None

    @property
    def subscribers(self) -> int:
        """Subscriptions open now."""
        return self._subscribers

    @property
    def cursor(self) -> int:
        """The feed's cursor as of the last batch (0 before the first)."""
        return self._cursor

    # FeedObserver: called in the feed's task; never blocks, awaits or raises.

    def applied(self, batch: RevocationBatch) -> None:
        if batch.is_snapshot:
            # Not contiguous with what came before: nobody may read across it.
            if self._started:
                self._epoch += 1
            self._started = True
        else:
            for revocation in batch.revocations:
                self._ring[self._head % self._capacity] = revocation
                self._head += 1
        self._cursor = batch.cursor
        self._wake()

    def currency_changed(self, current: bool) -> None:
        """Heartbeats read the feed's exact `is_current` when they are due."""

    # Subscribers.

    def subscribe(self) -> Subscription:
        """A subscription that sees every revocation applied from now on. NotReady before the
        feed's first batch or once closed; ServerBusy at `max_subscribers`."""
        if self._closed:
            raise NotReady("the server is stopping: resume on another replica")
        if not self._started:
            raise NotReady("the revocation feed is starting")
        if self._subscribers >= self._max_subscribers:
            raise ServerBusy(
                "this server has as many revocation subscribers as it takes",
                retry_after=_BUSY_RETRY,
            )
        self._subscribers += 1
        return Subscription(self, self._head, self._epoch)

    def close(self) -> None:
        """End every subscription (NotReady: the server is stopping) and refuse new ones."""
        self._closed = True
        self._wake()

    def _release(self) -> None:
        self._subscribers -= 1

    def _wake(self) -> None:
        arrival, self._arrival = self._arrival, None
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    async def _wait(self, within: float) -> None:
        if self._arrival is None:
            self._arrival = asyncio.get_running_loop().create_future()
        # asyncio.wait, not wait_for: a timeout must not cancel the future others share.
        await asyncio.wait((self._arrival,), timeout=within)

    def _take(self, subscription: Subscription) -> Revocation | None:
        if self._closed:
            raise NotReady("the server is stopping: resume from your last cursor elsewhere")
        if subscription.epoch != self._epoch:
            raise NotReady("the revocation feed lost its place: resume from your last cursor")
        position = subscription.position
        if position == self._head:
            return None
        if position < self._head - self._capacity:
            raise SubscriberTooSlow("too far behind the revocation feed: resume from your cursor")
        subscription.position = position + 1
        return self._ring[position % self._capacity]


class Subscription:
    """One subscriber's place in its fan-out's ring."""

    __slots__ = ("_fanout", "_open", "epoch", "position")

    def __init__(self, fanout: RevocationFanout, position: int, epoch: int) -> None:
        self._fanout = fanout
        self.position = position
        self.epoch = epoch
        self._open = True

    @property
    def is_caught_up(self) -> bool:
        """Whether it has read every revocation of every batch applied so far."""
        return self.position == self._fanout._head

    async def next(self, within: float) -> Revocation | None:
        """The next revocation; None if there is none (after waiting up to `within` seconds
        for one). SubscriberTooSlow if it was overwritten before this subscriber read it;
        NotReady once the fan-out closed or lost continuity."""
        taken = self._fanout._take(self)
        if taken is None and within > 0:
            await self._fanout._wait(within)
            taken = self._fanout._take(self)
        return taken

    def close(self) -> None:
        if self._open:
            self._open = False
            self._fanout._release()


class RevocationWatch:
    """Each WatchRevocations stream: the replay from the log, then the live fan-out.

    `window`: how long after a session ends one of its access tokens may still be
    accepted (the access-token lifetime plus the clock skew); the snapshot holds the
    sessions ended within it, and each revocation's tokens have expired by its
    `revoked_at + window`. Heartbeats go out after the replay and whenever the stream has
    been quiet for `heartbeat_interval`, but only while `is_current()`: a process whose
    feed is stale stays silent, so that its subscribers fail closed.
    """

    def __init__(
        self,
        log: RevocationLog,
        fanout: RevocationFanout,
        clock: Clock,
        *,
        is_current: Callable[[], bool],
        window: timedelta,
        heartbeat_interval: timedelta,
    ) -> None:
        self._log = log
        self._fanout = fanout
        self._clock = clock
        self._is_current = is_current
        self.window = window
        self._heartbeat_interval = heartbeat_interval.total_seconds()

    def tokens_expire_by(self, revocation: Revocation) -> datetime:
        """When every access token of the revoked session has expired, skew included."""
        return revocation.revoked_at + self.window

    @asynccontextmanager
    async def watch(self, after_cursor: int) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """The stream's events, for the block's duration. Subscribed before the replay is
        read, so that nothing committed in between is lost; duplicates are dropped by
        cursor. InvalidArgument for a negative cursor or one beyond the latest,
        CursorExpired for one older than the log keeps; the errors of
        RevocationFanout.subscribe and Subscription.next; DatabaseUnavailable."""
        if after_cursor < 0:
            raise InvalidArgument("after_cursor", "after_cursor must not be negative")
        subscription = self._fanout.subscribe()
        events = self._events(subscription, after_cursor)
        try:
            yield events
        finally:
            await events.aclose()
            subscription.close()

    async def _events(self, subscription: Subscription, after: int) -> AsyncGenerator[WatchEvent]:
        sent = after
        replay = self._snapshot() if after == 0 else self._backlog(after)
        async for event in replay:
            if isinstance(event, Revocation):
                yield event
            sent = max(sent, event.cursor)
        loop = asyncio.get_running_loop()
        heartbeat_due = loop.time()
        while True:
            revocation = await subscription.next(max(heartbeat_due - loop.time(), 0.0))
            if revocation is not None:
                if revocation.cursor > sent:
                    sent = revocation.cursor
                    yield revocation
                    heartbeat_due = loop.time() + self._heartbeat_interval
                continue
            if loop.time() < heartbeat_due:
                continue
            if self._is_current():
                if not subscription.is_caught_up:
                    continue  # a batch came: send it before claiming its cursor
                # Caught up with every batch: the feed's cursor has been sent too.
                sent = max(sent, self._fanout.cursor)
                yield Heartbeat(cursor=sent, sent_at=self._clock.now())
            heartbeat_due = loop.time() + self._heartbeat_interval

    async def _snapshot(self) -> AsyncIterator[WatchEvent]:
        """Every session ended within the window, then (as a Heartbeat the stream does not
        send) the cursor the live part continues after."""
        latest = (await self._log.bounds()).latest
        since = self._clock.now() - self.window
        last = 0
        while True:
            page = await self._log.read_ended_since(since, after_cursor=last, limit=_PAGE)
            for revocation in page:
                yield revocation
            if page:
                last = page[-1].cursor
            if len(page) < _PAGE:
                break
        yield Heartbeat(cursor=max(latest, last), sent_at=self._clock.now())

    async def _backlog(self, after: int) -> AsyncIterator[WatchEvent]:
        """Everything after `after`; CursorExpired if the sweeper may have taken any of it."""
        bounds = await self._log.bounds()
        if after > bounds.latest:
            raise InvalidArgument(
                "after_cursor", "after_cursor is beyond the latest revocation: send one received"
            )
        if after < bounds.swept_through:
            raise _expired()
        cursor = after
        while True:
            page = await self._log.read_after(cursor, limit=_PAGE)
            for revocation in page:
                yield revocation
            if page:
                cursor = page[-1].cursor
            if len(page) < _PAGE:
                break
        # A sweep during the reads could have taken rows before they were read.
        if after < (await self._log.bounds()).swept_through:
            raise _expired()


def _expired() -> CursorExpired:
    return CursorExpired("after_cursor is older than the revocation log keeps: start again with 0")
