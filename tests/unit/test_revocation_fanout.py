"""The fan-out hands every revocation the feed applies to each subscriber, in order, and
cuts off one that falls a whole ring behind without holding up the others."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from authsvc.core.errors import NotReady, ServerBusy, SubscriberTooSlow
from authsvc.core.models import Revocation
from authsvc.domain.revocation_watch import RevocationFanout, Subscription
from authsvc.domain.revocations import RevocationBatch
from tests.helpers import logout_revocation

pytestmark = pytest.mark.asyncio

_AT = datetime(2026, 1, 1, tzinfo=UTC)
# Bounds a wait that only a hang would reach; not a timing assertion.
_HANG = 30


def _batch(*cursors: int, after: int) -> RevocationBatch:
    return RevocationBatch(
        revocations=tuple(logout_revocation(cursor, _AT) for cursor in cursors),
        after=after,
        cursor=max((after, *cursors)),
        is_snapshot=False,
    )


def _started(*, capacity: int = 8, max_subscribers: int = 4) -> RevocationFanout:
    """A fan-out that has had the feed's first batch (a snapshot up to cursor 10)."""
    fanout = RevocationFanout(capacity=capacity, max_subscribers=max_subscribers)
    fanout.applied(_snapshot_to(10))
    return fanout


def _snapshot_to(cursor: int) -> RevocationBatch:
    return RevocationBatch(revocations=(), after=0, cursor=cursor, is_snapshot=True)


async def _waiting(subscription: Subscription) -> asyncio.Task[Revocation | None]:
    """The subscription's next() as a task that has got as far as waiting."""
    task = asyncio.create_task(subscription.next(3600))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its wait
    assert not task.done()
    return task


async def _drain(subscription: Subscription) -> list[int]:
    """The cursors a subscription has waiting, without waiting for more."""
    cursors = []
    while (revocation := await subscription.next(0)) is not None:
        cursors.append(revocation.cursor)
    return cursors


async def test_a_subscriber_gets_each_revocation_applied_after_it_subscribed_in_order() -> None:
    fanout = _started()
    fanout.applied(_batch(11, after=10))
    subscription = fanout.subscribe()

    fanout.applied(_batch(12, 14, after=11))
    fanout.applied(_batch(15, after=14))

    assert await _drain(subscription) == [12, 14, 15]


async def test_a_waiting_subscriber_is_woken_by_the_next_batch() -> None:
    fanout = _started()
    subscription = fanout.subscribe()
    waiting = await _waiting(subscription)

    fanout.applied(_batch(11, after=10))

    async with asyncio.timeout(_HANG):
        revocation = await waiting
    assert revocation is not None
    assert revocation.cursor == 11


async def test_a_subscriber_a_whole_ring_behind_is_cut_off_and_the_others_keep_theirs() -> None:
    fanout = _started(capacity=4)
    slow, keeping_up = fanout.subscribe(), fanout.subscribe()
    fanout.applied(_batch(11, 12, after=10))
    assert await _drain(keeping_up) == [11, 12]

    fanout.applied(_batch(13, 14, 15, after=12))

    with pytest.raises(SubscriberTooSlow):
        await slow.next(0)
    assert await _drain(keeping_up) == [13, 14, 15]


async def test_a_subscriber_exactly_a_ring_behind_still_gets_everything() -> None:
    fanout = _started(capacity=4)
    subscription = fanout.subscribe()

    fanout.applied(_batch(11, 12, 13, 14, after=10))

    assert await _drain(subscription) == [11, 12, 13, 14]


async def test_subscribers_beyond_the_limit_are_refused_server_busy() -> None:
    fanout = _started(max_subscribers=2)
    fanout.subscribe()
    fanout.subscribe()

    with pytest.raises(ServerBusy):
        fanout.subscribe()


async def test_a_closed_subscription_frees_its_place() -> None:
    fanout = _started(max_subscribers=1)
    fanout.subscribe().close()

    assert fanout.subscribe() is not None


async def test_subscribing_before_the_feeds_first_batch_is_not_ready() -> None:
    fanout = RevocationFanout(capacity=4, max_subscribers=4)

    with pytest.raises(NotReady):
        fanout.subscribe()


async def test_closing_ends_every_subscription_even_a_waiting_one() -> None:
    fanout = _started()
    subscription = fanout.subscribe()
    waiting = await _waiting(subscription)

    fanout.close()

    with pytest.raises(NotReady):
        async with asyncio.timeout(_HANG):
            await waiting
    with pytest.raises(NotReady):
        fanout.subscribe()


async def test_a_later_snapshot_batch_ends_the_subscriptions_it_broke_continuity_for() -> None:
    fanout = _started()
    before = fanout.subscribe()

    fanout.applied(_snapshot_to(500))

    with pytest.raises(NotReady):
        await before.next(0)
    after = fanout.subscribe()
    fanout.applied(_batch(501, after=500))
    assert await _drain(after) == [501]
