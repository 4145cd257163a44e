"""Webhook deliveries: the outbox's contract, the retry schedule, and the operator's view
(ListWebhookDeliveries, RetryWebhookDelivery).

Triggers on sessions write the outbox (migration 0023), in each event's transaction; the
worker (authsvc/webhook_worker.py) posts it. Nothing here runs on an RPC's path but the
operator's two calls."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import WebhookDeliveryNotFound
from authsvc.core.models import AuditEvent, Operator
from authsvc.core.webhooks import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryPage,
    WebhookDelivery,
    WebhookDeliveryState,
)
from authsvc.domain.admin import AdminEvent, admin_event

__all__ = [
    "RETRY_SCHEDULE",
    "WebhookDeliveries",
    "WebhookDeliveryStore",
    "retry_delay",
]

_log = logging.getLogger(__name__)

# The waits after each failed attempt (Standard Webhooks' suggested schedule): eight
# attempts over about 27 hours, then FAILED until an operator retries it.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
# Each wait is stretched or shrunk by up to this share, so the deliveries that one
# outage failed together do not all come back in the same second.
_JITTER = 0.2


def retry_delay(attempts: int, rng: random.Random) -> timedelta | None:
    """How long to wait after the `attempts`-th attempt failed; None: give up."""
    if attempts > len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[attempts - 1]
    return base * rng.uniform(1 - _JITTER, 1 + _JITTER)


class WebhookDeliveryStore(Protocol):
    """The outbox. Every method raises DatabaseUnavailable when the database cannot be
    reached in time; then nothing it would have written is written."""

    async def claim(
        self, endpoints: Sequence[str], *, now: datetime, limit: int, lease: timedelta
    ) -> list[ClaimedDelivery]:
        """At most `limit` pending deliveries to `endpoints` due at `now`, oldest due first,
        each with one more attempt counted and its next attempt moved to `now + lease`, so
        no other worker claims it while this one posts (and one that died mid-post lets it
        go when the lease ends). Rows another worker is claiming are skipped, never waited
        for. Holds no connection when it returns."""
        ...

    async def settle(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        """Record each outcome on its delivery, unless that delivery has been claimed
        again since (its attempts moved on) or retried by an operator."""
        ...

    async def outbox_endpoints(self) -> tuple[str, ...]:
        """The endpoints the triggers write events for on this store's connections (the
        pool's server settings); empty: they write none."""
        ...

    async def backlog(self, *, at_most: int) -> int:
        """How many deliveries are pending, counted up to `at_most`."""
        ...

    async def list_deliveries(
        self,
        state: WebhookDeliveryState,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        event: AuditEvent,
    ) -> DeliveryPage:
        """At most `limit` deliveries in `state`, newest event first (then by id,
        descending), after the cursor `after` (a page's `next_cursor`); records `event`
        with `listed_count` in the same transaction."""
        ...

    async def retry(
        self, delivery_id: uuid.UUID, *, now: datetime, event: AuditEvent
    ) -> WebhookDelivery | None:
        """A FAILED delivery back to PENDING, due at `now`, its attempts and last outcome
        cleared; one in another state is left as it is. Records `event` in the same
        transaction. The delivery after it; None, with nothing written, if there is none."""
        ...


class WebhookDeliveries:
    """The operator's view of the outbox; every call audited, naming its operator."""

    def __init__(self, store: WebhookDeliveryStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def list_deliveries(
        self,
        operator: Operator,
        state: WebhookDeliveryState,
        *,
        page_size: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> DeliveryPage:
        now = self._clock.now()
        return await self._store.list_deliveries(
            state,
            limit=page_size,
            after=after,
            event=admin_event(
                AdminEvent.WEBHOOK_DELIVERIES_LISTED,
                operator,
                now,
                state=state.value,
                page_size=page_size,
            ),
        )

    async def retry(self, operator: Operator, delivery_id: uuid.UUID) -> WebhookDelivery:
        """Queue a FAILED delivery again with fresh attempts; retrying a pending or
        delivered one changes nothing. WebhookDeliveryNotFound if there is none."""
        now = self._clock.now()
        delivery = await self._store.retry(
            delivery_id,
            now=now,
            event=admin_event(
                AdminEvent.WEBHOOK_DELIVERY_RETRIED,
                operator,
                now,
                delivery_id=str(delivery_id),
            ),
        )
        if delivery is None:
            raise WebhookDeliveryNotFound("webhook delivery not found")
        _log.info(
            "admin retried a webhook delivery",
            extra={
                "event": AdminEvent.WEBHOOK_DELIVERY_RETRIED.value,
                "operator": operator.name,
                "delivery_id": str(delivery_id),
            },
        )
        return delivery
