"""WebhookDelivery messages and states, between the domain and AdminService's wire."""

from __future__ import annotations

import uuid

from authsvc.api import convert
from authsvc.core.errors import InvalidArgument
from authsvc.core.webhooks import WebhookDelivery, WebhookDeliveryState
from authsvc.v1 import admin_service_pb2 as pb

__all__ = ["delivery_message", "delivery_state", "parse_delivery_id"]

# Each state is the proto value of its name.
_STATES = {
    state: pb.WebhookDeliveryState.Value(f"WEBHOOK_DELIVERY_STATE_{state.name}")
    for state in WebhookDeliveryState
}
_BY_VALUE: dict[int, WebhookDeliveryState] = {int(value): state for state, value in _STATES.items()}


def delivery_state(value: int) -> WebhookDeliveryState:
    """The state a request names; unset means FAILED (what an operator looks for)."""
    if value == pb.WEBHOOK_DELIVERY_STATE_UNSPECIFIED:
        return WebhookDeliveryState.FAILED
    state = _BY_VALUE.get(int(value))
    if state is None:
        raise InvalidArgument("state", "state is not a WebhookDeliveryState")
    return state


def parse_delivery_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument("delivery_id", "delivery_id must be a UUID") from None


def delivery_message(delivery: WebhookDelivery) -> pb.WebhookDelivery:
    message = pb.WebhookDelivery(
        delivery_id=str(delivery.id),
        endpoint=delivery.endpoint,
        event_type=delivery.event_type,
        state=_STATES[delivery.state],
        attempts=delivery.attempts,
        last_http_status=delivery.last_http_status or 0,
        last_error=delivery.last_error,
    )
    convert.set_timestamp(message.created_at, delivery.occurred_at)
    if delivery.last_attempt_at is not None:
        convert.set_timestamp(message.last_attempt_at, delivery.last_attempt_at)
    if delivery.state is WebhookDeliveryState.PENDING:
        convert.set_timestamp(message.next_attempt_at, delivery.next_attempt_at)
    return message
