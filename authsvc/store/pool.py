"""The process's one connection pool."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

__all__ = ["Connection", "Pool", "create_pool", "ping"]

Pool = asyncpg.Pool

if TYPE_CHECKING:
    # What pool.acquire() hands out; generic only in the type stubs.
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.pool.PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: timedelta,
    statement_timeout: timedelta,
) -> Pool:
    """Create the pool without connecting.

    min_size may be 0 so the server can start, answer health checks and report
    NOT_SERVING while the database is still coming up; connections are made on
    first use and replaced by asyncpg when the database restarts.
    """
    pool = asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout.total_seconds(),
        command_timeout=statement_timeout.total_seconds(),
        init=_init_connection,
        # Connections idle this long are closed, so a restarted database is
        # reconnected cleanly instead of failing on a dead socket first.
        max_inactive_connection_lifetime=60.0,
    )
    # With min_size=0 this opens no connection, so it cannot fail on an absent database.
    return await pool


async def ping(pool: Pool, *, within: timedelta) -> bool:
    """Whether the database answers a trivial query in time.

    A pool with every connection busy counts as reachable: its connections are
    in use, and waiting for one would report load as an outage (and take every
    replica out of its load balancer at once). Dead connections error out and
    return to the pool, so a real outage is still seen on the next probe.
    """
    if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
        return True
    try:
        async with asyncio.timeout(within.total_seconds()):
            await pool.execute("SELECT 1")
    except Exception:  # any failure at all means "not healthy"; cancellation still propagates
        return False
    return True
