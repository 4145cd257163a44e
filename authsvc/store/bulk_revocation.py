"""SQL for AdminService.RevokeSessions: count and sample the sessions a filter selects,
and end them in short batches.

A batch locks its rows in id order and ends them in one statement, then appends each to
the revocation log (store/revocations.py), under the log's advisory lock, which the
batch then holds until it commits. Logout, reuse detection and every other ending
wait for that commit, so a batch is kept small (the domain's size) and commits at once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from authsvc.core.models import AuditEvent, EndedSession, SessionEndReason, SessionId, UserId
from authsvc.core.session_filters import SampledSession, SessionFilter
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection
from authsvc.store.revocations import append_revocations
from authsvc.store.sessions import listed_session

__all__ = ["PgBulkRevocationStore"]

# A filter field given as NULL is off; the statements run with custom plans, so those
# tests fold away and each combination gets its own index (as store/admin.py's listing).
# $1 now, $2 the run's start (later sessions are not its), $3 user ids, $4 created after,
# $5 created before, $6 network, $7 LIKE pattern, $8 device types, $9 kid. The address
# is cast only when it looks like one: the column is text, and an unparsable row must
# not fail the whole statement.
_MATCHES = """
    s.revoked_at IS NULL AND s.idle_expires_at > $1 AND s.created_at <= $2
    AND ($3::uuid[] IS NULL OR s.user_id = ANY($3))
    AND ($4::timestamptz IS NULL OR s.created_at >= $4)
    AND ($5::timestamptz IS NULL OR s.created_at < $5)
    AND ($6::inet IS NULL OR CASE WHEN s.ip_address ~ '^[0-9A-Fa-f:.]+$'
                                  THEN s.ip_address::inet <<= $6 ELSE false END)
    AND ($7::text IS NULL OR s.user_agent ILIKE $7)
    AND ($8::text[] IS NULL OR s.device_type = ANY($8))
    AND ($9::text IS NULL OR s.signing_key_id = $9)
"""
# (Constants only in these f-strings: every value is a parameter.)
_COUNT = f"SELECT count(*) FROM sessions s WHERE {_MATCHES}"  # noqa: S608
# ListedSession's columns in its order, after the user.
_SAMPLE = f"""
SELECT
    s.user_id, s.id, s.created_at, s.last_active_at, s.idle_expires_at, s.expires_at,
    s.remember_me, s.user_agent, s.ip_address, s.device_type, s.browser, s.os,
    s.device_name, s.country, s.city
FROM sessions s WHERE {_MATCHES}
ORDER BY s.last_active_at DESC, s.id DESC
LIMIT $10
"""  # noqa: S608
# One batch: the next $11 matches after id $10, locked in id order (two runs at once
# queue on each other's rows rather than deadlock), then ended. A row a concurrent call
# changed is re-checked against the filter once locked: one ended meanwhile is skipped
# and the next taken instead, so a short batch means no match is left.
# The ids go to the UPDATE as one array, so it finds them by primary key (joined to the
# CTE instead, it hashed and scanned the whole table every batch).
_END_BATCH = f"""
WITH picked AS (
    SELECT s.id FROM sessions s
    WHERE {_MATCHES} AND ($10::uuid IS NULL OR s.id > $10)
    ORDER BY s.id
    LIMIT $11
    FOR UPDATE
)
UPDATE sessions AS s
SET revoked_at = $1, end_reason = 'bulk_revoked', revoke_reason = $12,
    ended_by_kind = 'operator', ended_by_operator = $13
WHERE s.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING s.id, s.user_id, s.created_at
"""  # noqa: S608
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its `%`, `_` and `\\` literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def filter_arguments(which: SessionFilter, *, now: datetime, started: datetime) -> tuple[Any, ...]:
    """$1..$9 of `_MATCHES`."""
    return (
        now,
        started,
        list(which.user_ids) or None,
        which.created_after,
        which.created_before,
        which.ip_cidr or None,
        like_pattern(which.user_agent_contains) if which.user_agent_contains else None,
        [device_type.value for device_type in which.device_types] or None,
        which.signing_key_id or None,
    )


def _sampled(row: asyncpg.Record) -> SampledSession:
    user_id, *listed = row
    return SampledSession(UserId(user_id), listed_session(listed))


class PgBulkRevocationStore:
    """domain.bulk_revocation.BulkRevocationStore in PostgreSQL; contracts on the
    Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def preview(
        self, which: SessionFilter, *, now: datetime, sample_size: int, event: AuditEvent
    ) -> tuple[int, list[SampledSession]]:
        arguments = filter_arguments(which, now=now, started=now)
        async with (
            translate_errors(),
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read"),
        ):
            # One snapshot: the sample is drawn from what was counted.
            await conn.execute(_CUSTOM_PLANS)
            count: int = await conn.fetchval(_COUNT, *arguments)
            rows = await conn.fetch(_SAMPLE, *arguments, sample_size)
            await _record(conn, event, count)
        return count, [_sampled(row) for row in rows]

    async def end_batch(
        self,
        which: SessionFilter,
        *,
        now: datetime,
        started: datetime,
        after: SessionId | None,
        limit: int,
        revoke_reason: str,
        operator: str,
    ) -> list[EndedSession]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CUSTOM_PLANS)
            rows = await conn.fetch(
                _END_BATCH,
                *filter_arguments(which, now=now, started=started),
                after,
                limit,
                revoke_reason,
                operator,
            )
            await append_revocations(
                conn,
                [(SessionId(row["id"]), UserId(row["user_id"])) for row in rows],
                reason=SessionEndReason.BULK_REVOKED,
                revoked_at=now,
            )
        ended = [
            EndedSession(id=SessionId(row["id"]), created_at=row["created_at"]) for row in rows
        ]
        # In id order, as locked: the next batch starts after the last.
        return sorted(ended, key=lambda session: session.id)

    async def record(self, event: AuditEvent, *, session_count: int) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await _record(conn, event, session_count)


async def _record(conn: Connection, event: AuditEvent, session_count: int) -> None:
    await insert_event(
        conn, replace(event, detail={**event.detail, "session_count": session_count})
    )
