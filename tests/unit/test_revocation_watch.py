"""A WatchRevocations stream at the instants no real database or listener can be made to
hit on cue: a revocation committed while the replay is read reaches the subscriber once,
whichever side delivers it; and a stream whose feed is stale stays silent.

The log here is a list behind the RevocationLog Protocol (its contract: entries in cursor
order, read after a cursor), so that the feed can deliver a batch at the exact moment a read
happens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from authsvc.core.clock import FrozenClock
from authsvc.core.models import (
    Revocation,
    RevocationLogBounds,
)
from authsvc.domain.revocation_watch import Heartbeat, RevocationFanout, RevocationWatch
from authsvc.domain.revocations import RevocationBatch
from tests.helpers import logout_revocation

pytestmark = pytest.mark.asyncio

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _ListLog:
    """A committed log. `on_read` runs once, as the first read takes its snapshot of the log
    (`seen`: the read sees what it commits) or just after (it does not), as a commit
    elsewhere may."""

    def __init__(self, entries: list[Revocation]) -> None:
        self.entries = entries
        self.on_read: Callable[[], None] = lambda: None
        self.seen = True

    def _read(self, keep: Callable[[Revocation], bool], limit: int) -> list[Revocation]:
        on_read, self.on_read = self.on_read, lambda: None
        if self.seen:
            on_read()
        found = [entry for entry in self.entries if keep(entry)][:limit]
        if not self.seen:
            on_read()
        return found

    async def read_after(self, cursor: int, *, limit: int) -> list[Revocation]:
        return self._read(lambda entry: entry.cursor > cursor, limit)

    async def read_ended_since(
        self, since: datetime, *, after_cursor: int, limit: int
    ) -> list[Revocation]:
        return self._read(
            lambda entry: entry.revoked_at >= since and entry.cursor > after_cursor, limit
        )

    async def bounds(self) -> RevocationLogBounds:
        return RevocationLogBounds(latest=self.entries[-1].cursor, swept_through=0)


def _started_fanout() -> RevocationFanout:
    fanout = RevocationFanout(capacity=16, max_subscribers=1)
    fanout.applied(RevocationBatch(revocations=(), after=0, cursor=3, is_snapshot=True))
    return fanout


@pytest.mark.parametrize("seen", [True, False], ids=["seen by the replay", "just after it"])
@pytest.mark.parametrize("after_cursor", [0, 2])
async def test_a_revocation_committed_during_the_replay_is_sent_once(
    after_cursor: int, seen: bool
) -> None:
    log = _ListLog([logout_revocation(cursor, _NOW) for cursor in (1, 2, 3)])
    log.seen = seen
    fanout = _started_fanout()
    watch = RevocationWatch(
        log,
        fanout,
        FrozenClock(_NOW),
        is_current=lambda: True,
        window=timedelta(minutes=15),
        # Zero: a heartbeat as soon as the stream is quiet, ending the test there.
        heartbeat_interval=timedelta(0),
    )
    committed = [logout_revocation(4, _NOW), logout_revocation(5, _NOW)]

    def commit() -> None:
        log.entries.extend(committed)
        fanout.applied(
            RevocationBatch(revocations=(*committed,), after=3, cursor=5, is_snapshot=False)
        )

    log.on_read = commit

    received: list[int] = []
    async with watch.watch(after_cursor) as events:
        async for event in events:
            received.append(event.cursor)
            if isinstance(event, Heartbeat):
                break

    replayed = [cursor for cursor in (1, 2, 3) if cursor > after_cursor]
    assert received == [*replayed, 4, 5, 5]


async def test_a_stream_whose_feed_is_stale_sends_no_heartbeat_until_it_is_current() -> None:
    fanout = _started_fanout()
    asked = 0
    current = False

    def is_current() -> bool:
        # Stale for the first two heartbeats due; at the third the feed catches up, cursor 4.
        nonlocal asked, current
        asked += 1
        if asked == 3:
            fanout.applied(
                RevocationBatch(
                    revocations=(logout_revocation(4, _NOW),), after=3, cursor=4, is_snapshot=False
                )
            )
            current = True
        return current

    watch = RevocationWatch(
        _ListLog([logout_revocation(cursor, _NOW) for cursor in (1, 2, 3)]),
        fanout,
        FrozenClock(_NOW),
        is_current=is_current,
        window=timedelta(minutes=15),
        heartbeat_interval=timedelta(milliseconds=1),
    )

    received: list[tuple[str, int]] = []
    async with watch.watch(3) as events:
        async for event in events:
            received.append((type(event).__name__, event.cursor))
            if isinstance(event, Heartbeat):
                break

    assert received == [("Revocation", 4), ("Heartbeat", 4)]
