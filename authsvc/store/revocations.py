"""SQL for the revocation log (migrations 0014 and 0024): the one append every ending
statement is followed by, and the feed's reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.models import (
    Revocation,
    RevocationLogBounds,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection, is_read_only

__all__ = [
    "APPLICATION_NAME",
    "CHANNEL",
    "PgListeningLog",
    "PgRevocationListener",
    "PgRevocationLog",
    "append_revocations",
]

# The channel migration 0024's append notifies.
CHANNEL = "authsvc_revocations"
APPLICATION_NAME = "authsvc revocation feed"

if TYPE_CHECKING:
    _Connection: TypeAlias = asyncpg.Connection[asyncpg.Record]
else:
    _Connection = asyncpg.Connection

# A statement of its own with array parameters: on Citus it runs on the coordinator, where
# the log and the feed's listeners are (as part of a statement over one shard it would be
# pushed down to that shard's worker).
_APPEND = """
SELECT revocation_log_append_endings($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
"""
_READ_AFTER = """
SELECT id, session_id, user_id, reason, revoked_at FROM revocation_log
WHERE id > $1 ORDER BY id LIMIT $2
"""
_READ_ENDED_SINCE = """
SELECT id, session_id, user_id, reason, revoked_at FROM revocation_log
WHERE revoked_at >= $1 AND id > $2 ORDER BY id LIMIT $3
"""
# max(id) reads the primary key's last entry. A log swept empty still has its latest
# cursor in the swept-through mark.
_BOUNDS = """
SELECT
    GREATEST((SELECT max(id) FROM revocation_log), swept.through, 0) AS latest,
    COALESCE(swept.through, 0) AS swept_through
FROM (SELECT (SELECT through FROM revocation_log_swept) AS through) AS swept
"""


async def append_revocations(
    conn: Connection,
    ended: Iterable[tuple[SessionId, UserId]],
    *,
    reason: SessionEndReason,
    revoked_at: datetime,
) -> None:
    """Log the sessions (id, user) a statement just ended on `conn`, in its transaction,
    which then holds the log's lock until it commits (so cursors follow commit order).
    Every statement that sets revoked_at calls this right after, with exactly the rows it
    ended (its WHERE requires revoked_at IS NULL, so each ending is logged once); the
    log leaves out expiries. Nothing ended, no round trip and no notice."""
    endings = list(ended)
    if not endings:
        return
    await conn.execute(
        _APPEND,
        [session_id for session_id, _ in endings],
        [user_id for _, user_id in endings],
        [reason.value] * len(endings),
        [revoked_at] * len(endings),
    )


def _revocation(row: asyncpg.Record) -> Revocation:
    return Revocation(
        cursor=row["id"],
        session_id=SessionId(row["session_id"]),
        user_id=UserId(row["user_id"]),
        reason=SessionEndReason(row["reason"]),
        revoked_at=row["revoked_at"],
    )


class _Reads:
    """The log's reads on a pool or on one connection (both have fetch and fetchrow)."""

    __slots__ = ("_db",)

    def __init__(self, db: asyncpg.Pool | _Connection) -> None:
        self._db: Any = db

    async def read_after(self, cursor: int, *, limit: int) -> list[Revocation]:
        async with translate_errors():
            rows = await self._db.fetch(_READ_AFTER, cursor, limit)
        return [_revocation(row) for row in rows]

    async def read_ended_since(
        self, since: datetime, *, after_cursor: int, limit: int
    ) -> list[Revocation]:
        async with translate_errors():
            rows = await self._db.fetch(_READ_ENDED_SINCE, since, after_cursor, limit)
        return [_revocation(row) for row in rows]

    async def bounds(self) -> RevocationLogBounds:
        async with translate_errors():
            row = await self._db.fetchrow(_BOUNDS)
        return RevocationLogBounds(latest=row["latest"], swept_through=row["swept_through"])


class PgRevocationLog(_Reads):
    """domain.revocations.RevocationLog on the pool; contracts on the Protocol."""

    __slots__ = ()

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)


class PgListeningLog(_Reads):
    """domain.revocations.ListeningLog on one dedicated connection."""

    __slots__ = ("_conn", "_lost", "_notified")

    def __init__(self, conn: _Connection) -> None:
        super().__init__(conn)
        self._conn = conn
        self._notified = asyncio.Event()
        self._lost = asyncio.Event()

    def on_notify(self, *_: object) -> None:
        self._notified.set()

    def on_lost(self, *_: object) -> None:
        self._lost.set()
        self._notified.set()

    async def wait(self, seconds: float) -> bool:
        if is_read_only(self._conn):
            # The primary was fenced for a switchover (the last round trip said so): the
            # notifications now come from the new one, which a new connection finds.
            raise DatabaseUnavailable(detail="the revocation listener's server is read-only")
        if not self._notified.is_set():
            try:
                async with asyncio.timeout(seconds):
                    await self._notified.wait()
            except TimeoutError:
                return False
        if self._lost.is_set():
            raise DatabaseUnavailable(detail="the revocation listener's connection was lost")
        self._notified.clear()
        return True


class PgRevocationListener:
    """domain.revocations.RevocationListener: a connection of its own on `dsn`, outside
    the pool (a pooled connection's LISTEN would be reset on release, and a
    transaction-pooling proxy would hand the session to someone else)."""

    __slots__ = ("_connect_timeout", "_dsn", "_statement_timeout")

    def __init__(self, dsn: str, *, connect_timeout: timedelta, statement_timeout: timedelta):
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[PgListeningLog]:
        async with translate_errors(self._dsn):
            conn: _Connection = await asyncpg.connect(
                self._dsn,
                timeout=self._connect_timeout.total_seconds(),
                command_timeout=self._statement_timeout.total_seconds(),
                # Names it in pg_stat_activity, for operators (and the tests that cut it).
                server_settings={"application_name": APPLICATION_NAME},
            )
        try:
            log = PgListeningLog(conn)
            conn.add_termination_listener(log.on_lost)
            async with translate_errors():
                await conn.add_listener(CHANNEL, log.on_notify)
            yield log
        finally:
            # Closing a connection whose server is gone can wait for the timeout.
            conn.terminate()
