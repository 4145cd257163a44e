"""SQL for the webhook outbox (migration 0023): the worker's claim and settle, and the
operator's list and retry. Triggers on sessions write the rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from authsvc.core.models import AuditEvent
from authsvc.core.webhooks import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryPage,
    WebhookDelivery,
    WebhookDeliveryState,
)
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors

__all__ = ["PgWebhookDeliveryStore", "outbox_settings"]

# Server settings the triggers read (migration 0023), given to the pool at connect.
_ENDPOINTS_SETTING = "authsvc.webhook_endpoints"
_IDLE_AFTER_SETTING = "authsvc.webhook_idle_after"


def outbox_settings(endpoints: Sequence[str], *, idle_after: timedelta) -> dict[str, str]:
    """The pool's server settings that make its connections write session events to the
    outbox for `endpoints`, a refresh after `idle_after` of idleness counting as one;
    empty (nothing written) with no endpoint. Every connection that may create, refresh
    or end a session needs them, so the pool's connections carry them from the start."""
    if not endpoints:
        return {}
    return {
        _ENDPOINTS_SETTING: " ".join(endpoints),
        _IDLE_AFTER_SETTING: f"{idle_after.total_seconds()} seconds",
    }


# SKIP LOCKED: a row another replica is claiming is left to it. The lease moves
# next_attempt_at, so the row is not due again while its attempt is in flight.
_CLAIM = """
UPDATE webhook_deliveries
SET attempts = attempts + 1, next_attempt_at = $3
WHERE id = ANY(ARRAY(
    SELECT id FROM webhook_deliveries
    WHERE state = 'pending' AND next_attempt_at <= $1 AND endpoint = ANY($4::text[])
    ORDER BY next_attempt_at
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
RETURNING id, endpoint, event_type, occurred_at, data, attempts
"""
# One round trip for a batch. `attempts` guards against a lease that ran out and was
# claimed again, and against an operator's retry in between.
_SETTLE = """
UPDATE webhook_deliveries AS d
SET state = o.state, last_attempt_at = o.attempted_at, next_attempt_at = o.next_attempt_at,
    last_http_status = o.http_status, last_error = o.error
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::int[], $7::text[])
    AS o(id, attempts, state, attempted_at, next_attempt_at, http_status, error)
WHERE d.id = o.id AND d.attempts = o.attempts AND d.state = 'pending'
"""
_OUTBOX_ENDPOINTS = "SELECT current_setting('authsvc.webhook_endpoints', true)"
_BACKLOG = """
SELECT count(*) FROM (SELECT FROM webhook_deliveries WHERE state = 'pending' LIMIT $1) AS p
"""
_LIST_FIRST_PAGE = """
SELECT
    id, endpoint, event_type, state, occurred_at, attempts, last_attempt_at, next_attempt_at,
    last_http_status, last_error
FROM webhook_deliveries WHERE state = $1
ORDER BY occurred_at DESC, id DESC
LIMIT $2
"""
_LIST_AFTER = """
SELECT
    id, endpoint, event_type, state, occurred_at, attempts, last_attempt_at, next_attempt_at,
    last_http_status, last_error
FROM webhook_deliveries
WHERE state = $1 AND (occurred_at, id) < ($3, $4)
ORDER BY occurred_at DESC, id DESC
LIMIT $2
"""
# The row comes back whatever its state, so that a retry of a pending or delivered
# delivery answers with it unchanged.
_RETRY = """
WITH retried AS (
    UPDATE webhook_deliveries
    SET state = 'pending', attempts = 0, next_attempt_at = $2, last_attempt_at = NULL,
        last_http_status = NULL, last_error = ''
    WHERE id = $1 AND state = 'failed'
    RETURNING
        id, endpoint, event_type, state, occurred_at, attempts, last_attempt_at, next_attempt_at,
        last_http_status, last_error
)
SELECT * FROM retried
UNION ALL
SELECT
    id, endpoint, event_type, state, occurred_at, attempts, last_attempt_at, next_attempt_at,
    last_http_status, last_error
FROM webhook_deliveries WHERE id = $1 AND NOT EXISTS (SELECT FROM retried)
"""


def _delivery(row: asyncpg.Record) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        endpoint=row["endpoint"],
        event_type=row["event_type"],
        state=WebhookDeliveryState(row["state"]),
        occurred_at=row["occurred_at"],
        attempts=row["attempts"],
        last_attempt_at=row["last_attempt_at"],
        next_attempt_at=row["next_attempt_at"],
        last_http_status=row["last_http_status"],
        last_error=row["last_error"],
    )


class PgWebhookDeliveryStore:
    """domain.webhook_deliveries.WebhookDeliveryStore in PostgreSQL; contracts on the
    Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self, endpoints: Sequence[str], *, now: datetime, limit: int, lease: timedelta
    ) -> list[ClaimedDelivery]:
        async with translate_errors():
            rows = await self._pool.fetch(_CLAIM, now, limit, now + lease, list(endpoints))
        return [
            ClaimedDelivery(
                id=row["id"],
                endpoint=row["endpoint"],
                event_type=row["event_type"],
                occurred_at=row["occurred_at"],
                data=row["data"],
                attempts=row["attempts"],
            )
            for row in rows
        ]

    async def settle(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        if not outcomes:
            return
        async with translate_errors():
            await self._pool.execute(
                _SETTLE,
                [o.id for o in outcomes],
                [o.attempts for o in outcomes],
                [o.state.value for o in outcomes],
                [o.attempted_at for o in outcomes],
                [o.next_attempt_at for o in outcomes],
                [o.http_status for o in outcomes],
                [o.error for o in outcomes],
            )

    async def outbox_endpoints(self) -> tuple[str, ...]:
        async with translate_errors():
            setting = await self._pool.fetchval(_OUTBOX_ENDPOINTS)
        return tuple(setting.split()) if setting else ()

    async def backlog(self, *, at_most: int) -> int:
        async with translate_errors():
            return int(await self._pool.fetchval(_BACKLOG, at_most))

    async def list_deliveries(
        self,
        state: WebhookDeliveryState,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        event: AuditEvent,
    ) -> DeliveryPage:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if after is None:
                rows = await conn.fetch(_LIST_FIRST_PAGE, state.value, limit + 1)
            else:
                rows = await conn.fetch(_LIST_AFTER, state.value, limit + 1, *after)
            deliveries = [_delivery(row) for row in rows[:limit]]
            await insert_event(
                conn, replace(event, detail={**event.detail, "listed_count": len(deliveries)})
            )
        last = deliveries[-1] if len(rows) > limit else None
        return DeliveryPage(
            deliveries=deliveries,
            next_cursor=None if last is None else (last.occurred_at, last.id),
        )

    async def retry(
        self, delivery_id: uuid.UUID, *, now: datetime, event: AuditEvent
    ) -> WebhookDelivery | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_RETRY, delivery_id, now)
            if row is None:
                return None
            await insert_event(conn, event)
        return _delivery(row)
