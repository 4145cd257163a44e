"""Webhook deliveries as values: what the outbox holds and the worker and operators see."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "ClaimedDelivery",
    "DeliveryOutcome",
    "DeliveryPage",
    "WebhookDelivery",
    "WebhookDeliveryState",
]


class WebhookDeliveryState(enum.Enum):
    """Where a delivery stands (migration 0023's `state`)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    """One event on its way to one endpoint, as operators see it: never its payload."""

    id: uuid.UUID
    endpoint: str
    event_type: str
    state: WebhookDeliveryState
    # When the event happened.
    occurred_at: datetime
    attempts: int
    last_attempt_at: datetime | None
    # Meaningful while pending.
    next_attempt_at: datetime
    # None: the last attempt got no answer, or none was made.
    last_http_status: int | None
    last_error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryPage:
    deliveries: list[WebhookDelivery]
    # The last delivery's (occurred_at, id) when another page follows.
    next_cursor: tuple[datetime, uuid.UUID] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedDelivery:
    """A delivery the worker holds the lease of: what it posts."""

    id: uuid.UUID
    endpoint: str
    event_type: str
    occurred_at: datetime
    # The payload's "data" member.
    data: dict[str, Any]
    # Attempts made, this one included.
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOutcome:
    """What became of one claimed attempt, for the store to record."""

    id: uuid.UUID
    # The attempt number it settles: a lease taken over since then is not overwritten.
    attempts: int
    state: WebhookDeliveryState
    attempted_at: datetime
    # When to try again, if still pending.
    next_attempt_at: datetime
    http_status: int | None
    error: str
