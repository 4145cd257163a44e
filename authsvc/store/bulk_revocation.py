"""SQL for AdminService.RevokeSessions: count and sample the sessions a filter selects,
and end them in short batches.

A batch picks its rows' keys in id order and ends them by key, then appends each to
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
    s.device_name, s.country, s.city, s.aal, s.auth_methods, s.auth_method_times
FROM sessions s WHERE {_MATCHES}
ORDER BY s.last_active_at DESC, s.id DESC
LIMIT $10
"""  # noqa: S608
# One batch, in rounds: `_PICK` takes the keys of the next matches after id $10, in id
# order, without locks; `_END_PICKED` ends exactly those, re-checking the filter (Citus
# refuses FOR UPDATE in a query over several shards, and the modifying-CTE form it had
# ran its pick as a separate statement anyway). A row a concurrent call ended meanwhile
# fails the re-check (the UPDATE waits for its lock, then sees it ended) and is skipped;
# the next round picks after the last key seen to fill the batch, so a short batch still
# means no match is left. Two runs at once pick the same rows and the second skips them.
_PICK = f"""
SELECT s.user_id, s.id FROM sessions s
WHERE {_MATCHES} AND ($10::uuid IS NULL OR s.id > $10)
ORDER BY s.id
LIMIT $11
"""  # noqa: S608
# By whole primary key (user_id, id): each shard's statement finds its rows by index.
_END_PICKED = f"""
UPDATE sessions AS s
SET revoked_at = $1, end_reason = 'bulk_revoked', revoke_reason = $10,
    ended_by_kind = 'operator', ended_by_operator = $11
WHERE s.user_id = ANY($12::uuid[]) AND s.id = ANY($13::uuid[]) AND {_MATCHES}
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
        arguments = filter_arguments(which, now=now, started=started)
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CUSTOM_PLANS)
            rows: list[asyncpg.Record] = []
            while len(rows) < limit:
                wanted = limit - len(rows)
                picked = await conn.fetch(_PICK, *arguments, after, wanted)
                if not picked:
                    break
                rows += await conn.fetch(
                    _END_PICKED,
                    *arguments,
                    revoke_reason,
                    operator,
                    [row["user_id"] for row in picked],
                    [row["id"] for row in picked],
                )
                if len(picked) < wanted:
                    break
                after = SessionId(picked[-1]["id"])
            await append_revocations(
                conn,
                [(SessionId(row["id"]), UserId(row["user_id"])) for row in rows],
                reason=SessionEndReason.BULK_REVOKED,
                revoked_at=now,
            )
        ended = [
            EndedSession(id=SessionId(row["id"]), created_at=row["created_at"]) for row in rows
        ]
        # In id order: the next batch starts after the last.
        return sorted(ended, key=lambda session: session.id)

    async def record(self, event: AuditEvent, *, session_count: int) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await _record(conn, event, session_count)


async def _record(conn: Connection, event: AuditEvent, session_count: int) -> None:
    await insert_event(
        conn, replace(event, detail={**event.detail, "session_count": session_count})
    )
