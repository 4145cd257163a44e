"""SQL for reading a session's refresh lineage (GetSessionLineage). The steps are written
with the rotation they record, in store/sessions.py."""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from authsvc.core.lineage import LineageStep, RefreshOutcome, ReuseDetection, SessionLineage
from authsvc.core.models import (
    AuditEvent,
    RequestOrigin,
    Session,
    SessionEndReason,
    SessionId,
)
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection
from authsvc.store.sessions import fetch_session

__all__ = ["PgLineageStore"]

_STEP_COLUMNS = """
    presented_token_id, successor_token_id, presented_at, ip_address, user_agent, outcome,
    within_grace
"""
# The token issued at login: the first presentation's, else (never refreshed, or
# refreshed only with lineage off) the oldest token still on record. Every statement
# after the session's lookup by id names its user ($2), the routing key (migration 0025).
_HEAD = """
SELECT
    s.end_reason,
    coalesce(
        (SELECT presented_token_id FROM refresh_lineage WHERE user_id = $2 AND session_id = $1
         ORDER BY id LIMIT 1),
        (SELECT id FROM refresh_tokens WHERE user_id = $2 AND session_id = $1
         ORDER BY created_at, id LIMIT 1)
    ) AS initial_token_id
FROM sessions s WHERE s.user_id = $2 AND s.id = $1
"""
# The newest $2 steps, newest first (the index's order, backwards); the caller reverses.
# (Constants only in these f-strings: every value is a parameter.)
_NEWEST_STEPS = f"""
SELECT {_STEP_COLUMNS} FROM refresh_lineage WHERE user_id = $3 AND session_id = $1
ORDER BY id DESC LIMIT $2
"""  # noqa: S608
# The presentation that ended the session as reuse, then the first presentation of the
# token it replayed: the one that rotated it. The last step walking back, and the
# token's first walking forward, over this session's rows only.
_REUSE_PAIR = f"""
WITH replayed AS MATERIALIZED (
    SELECT id, {_STEP_COLUMNS} FROM refresh_lineage
    WHERE user_id = $2 AND session_id = $1 AND outcome = 'reuse_detected'
    ORDER BY id DESC LIMIT 1
)
SELECT true AS is_replay, {_STEP_COLUMNS} FROM replayed
UNION ALL
(SELECT false, {_STEP_COLUMNS} FROM refresh_lineage
 WHERE user_id = $2 AND session_id = $1
   AND presented_token_id = (SELECT presented_token_id FROM replayed)
   AND id < (SELECT id FROM replayed)
 ORDER BY id LIMIT 1)
"""  # noqa: S608
_REUSE_ENDED = SessionEndReason.REFRESH_TOKEN_REUSE.value


def _step(row: asyncpg.Record) -> LineageStep:
    return LineageStep(
        token_id=row["presented_token_id"],
        successor_token_id=row["successor_token_id"],
        presented_at=row["presented_at"],
        origin=RequestOrigin(ip_address=row["ip_address"], user_agent=row["user_agent"]),
        outcome=RefreshOutcome(row["outcome"]),
        within_grace=row["within_grace"],
    )


class PgLineageStore:
    """domain.lineage.LineageStore in PostgreSQL; the contract is on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read_lineage(
        self, session_id: SessionId, *, limit: int, event: AuditEvent
    ) -> SessionLineage | None:
        # One snapshot: the steps, the reuse pair and the session agree.
        async with (
            translate_errors(),
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read"),
        ):
            # By id alone (an operator names the session, not its user): not routed.
            session = await fetch_session(conn, session_id)
            lineage = None if session is None else await self._read(conn, session, limit)
            await insert_event(
                conn,
                replace(
                    event,
                    user_id=None if session is None else session.user_id,
                    detail={
                        **event.detail,
                        "found": lineage is not None,
                        "step_count": 0 if lineage is None else len(lineage.steps),
                    },
                ),
            )
        return lineage

    @staticmethod
    async def _read(conn: Connection, session: Session, limit: int) -> SessionLineage:
        head = await conn.fetchrow(_HEAD, session.id, session.user_id)
        assert head is not None  # the session was read in this snapshot
        rows = await conn.fetch(_NEWEST_STEPS, session.id, limit + 1, session.user_id)
        steps = tuple(_step(row) for row in reversed(rows[:limit]))
        reuse = None
        # Only reuse ends a session with this reason; it records its step in the same
        # transaction (unless lineage was off).
        if head["end_reason"] == _REUSE_ENDED:
            pair = {
                row["is_replay"]: _step(row)
                for row in await conn.fetch(_REUSE_PAIR, session.id, session.user_id)
            }
            if True in pair:
                reuse = ReuseDetection(
                    first_presentation=pair.get(False), replayed_presentation=pair[True]
                )
        return SessionLineage(
            session=session,
            initial_token_id=head["initial_token_id"],
            steps=steps,
            truncated=len(rows) > limit,
            reuse=reuse,
        )
