"""SQL for the audit trail: append, list; deletion is the sweeper's."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from authsvc.core.models import AuditEvent, RequestOrigin, SessionId, UserId
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection

__all__ = ["PgAuditStore", "event_args", "event_of", "insert_event", "insert_events"]

_INSERT_EVENT = """
INSERT INTO audit_events (occurred_at, event, user_id, session_id, ip_address, user_agent, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
# A filter given as NULL is off. An operator's one-off query: planned with its values
# (a custom plan), so the NULL tests fold away and user_id's index still serves.
_LIST = """
SELECT occurred_at, event, user_id, session_id, ip_address, user_agent, detail
FROM audit_events
WHERE ($2::uuid IS NULL OR user_id = $2)
  AND ($3::text IS NULL OR event = $3)
  AND ($4::timestamptz IS NULL OR occurred_at >= $4)
ORDER BY occurred_at DESC, id DESC LIMIT $1
"""


def event_args(event: AuditEvent) -> tuple[object, ...]:
    return (
        event.occurred_at,
        event.event,
        event.user_id,
        event.session_id,
        event.origin.ip_address,
        event.origin.user_agent,
        event.detail,
    )


async def insert_event(conn: Connection, event: AuditEvent) -> None:
    """Append `event` on `conn`, inside the caller's transaction."""
    await conn.execute(_INSERT_EVENT, *event_args(event))


async def insert_events(conn: Connection, events: list[AuditEvent]) -> None:
    """Append several events on `conn` in one round trip."""
    await conn.executemany(_INSERT_EVENT, [event_args(event) for event in events])


def event_of(row: asyncpg.Record) -> AuditEvent:
    """An `audit_events` row as the domain's AuditEvent."""
    return AuditEvent(
        event=row["event"],
        occurred_at=row["occurred_at"],
        user_id=None if row["user_id"] is None else UserId(row["user_id"]),
        session_id=None if row["session_id"] is None else SessionId(row["session_id"]),
        origin=RequestOrigin(ip_address=row["ip_address"], user_agent=row["user_agent"]),
        detail=row["detail"],
    )


class PgAuditStore:
    """domain.refusals.RefusalStore in PostgreSQL (contract on the Protocol), and the
    trail as `authsvc audit` reads it."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, event: AuditEvent) -> None:
        async with translate_errors():
            await self._pool.execute(_INSERT_EVENT, *event_args(event))

    async def audit_many(self, events: list[AuditEvent]) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_events(conn, events)

    async def recent(
        self,
        *,
        limit: int,
        user_id: uuid.UUID | None = None,
        event: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEvent]:
        """The newest `limit` events first; only `user_id`'s, only those named `event`, only
        those at or after `since`, for each of them that is given."""
        async with translate_errors():
            rows = await self._pool.fetch(_LIST, limit, user_id, event, since)
        return [event_of(row) for row in rows]
