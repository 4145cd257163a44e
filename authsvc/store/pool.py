"""The process's one connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from authsvc.core.pooler import DatabasePooler
from authsvc.store.errors import translate_errors

__all__ = [
    "SESSION_LOCKS_APPLICATION_NAME",
    "Connection",
    "Pool",
    "create_pool",
    "has_citus",
    "is_read_only",
    "open_connections",
    "ping",
    "session_advisory_lock",
    "try_session_advisory_lock",
]

Pool = asyncpg.Pool

if TYPE_CHECKING:
    # What pool.acquire() hands out; generic only in the type stubs.
    Connection: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.pool.PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


_LOCK = "SELECT pg_advisory_lock($1)"
_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_UNLOCK = "SELECT pg_advisory_unlock($1)"


def is_read_only(conn: asyncpg.Connection) -> bool:
    """Whether the server behind `conn` now refuses writes: a standby, or a primary fenced
    read-only for a switchover. PostgreSQL 14+ reports both settings to the client as they
    change (the same ones `target_session_attrs=read-write` reads), so this asks nothing."""
    settings = conn.get_settings()
    return "on" in (
        getattr(settings, "in_hot_standby", "off"),
        getattr(settings, "default_transaction_read_only", "off"),
    )


if TYPE_CHECKING:
    _BaseConnection: TypeAlias = asyncpg.Connection[asyncpg.Record]
else:
    _BaseConnection = asyncpg.Connection


class _PooledConnection(_BaseConnection):
    """A pooled connection that goes back without asyncpg's reset query unless it listened.

    The reset query (advisory unlock all, CLOSE ALL, UNLISTEN, RESET ALL) is a round trip
    on every checkout, about 8 % of a ValidateToken's server CPU, for state this service
    leaves on no connection: no SET, cursors or temporary tables outlive a transaction
    (asyncpg always rolls an open one back), and `session_advisory_lock` never lets a lock
    go back. LISTEN is the exception the structure handles: asyncpg delivers notifications
    only through `add_listener`, which marks the connection, so one that listened is reset
    in full and no LISTEN reaches the next borrower.
    """

    _has_listened = False

    async def add_listener(self, channel: str, callback: Any) -> None:
        self._has_listened = True
        await super().add_listener(channel, callback)

    def get_reset_query(self) -> str:
        # asyncpg's documented hook: an empty query sends nothing on release.
        return super().get_reset_query() if self._has_listened else ""

    async def reset(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 (asyncpg's)
        # A connection whose server turned read-only (the old primary of a switchover) is
        # closed rather than reused: the pool's next connection finds the writable host.
        if is_read_only(self):
            self.terminate()
            return
        await super().reset(timeout=timeout)


def _connector(dsn: str) -> Callable[..., Coroutine[Any, Any, asyncpg.Connection]]:
    """asyncpg.connect, failing with a DatabaseUnavailable that says what failed, and where."""

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        async with translate_errors(dsn):
            return await asyncpg.connect(*args, **kwargs)

    return connect


if TYPE_CHECKING:
    _BasePool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    _BasePool = asyncpg.Pool


class _TransactionPooledPool(_BasePool):
    """A pool on a transaction-pooling PgBouncer, with a small direct pool beside it for
    what must stay on one server session: session-level advisory locks and the work done
    under them (migrations, the sweep, email canonicalisation). Closed together."""

    __slots__ = ("session_pool",)

    def __init__(self, *args: Any, session_pool: Pool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_pool = session_pool

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self.session_pool.close()

    def terminate(self) -> None:
        super().terminate()
        self.session_pool.terminate()


# The direct pool serves a few maintenance jobs of one process, one at a time per lock.
_SESSION_POOL_MAX_SIZE = 2
# How the direct pool's connections show in pg_stat_activity, beside the feed's.
SESSION_LOCKS_APPLICATION_NAME = "authsvc session locks"


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: timedelta,
    statement_timeout: timedelta,
    server_settings: Mapping[str, str] | None = None,
    pooler: DatabasePooler = DatabasePooler.NONE,
    direct_dsn: str | None = None,
) -> Pool:
    """Create the pool without connecting. `server_settings` are set on each connection
    from its start (the startup packet), so no reset clears them.

    min_size may be 0 so the server can start, answer health checks and report
    NOT_SERVING while the database is still coming up; connections are made on
    first use and replaced by asyncpg when the database restarts.

    Behind a transaction-pooling PgBouncer (`pooler`), session-level advisory locks are
    taken on `direct_dsn`, which must reach PostgreSQL directly; `server_settings` must be
    empty, since PgBouncer refuses startup parameters it does not track itself.
    """
    options: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": connect_timeout.total_seconds(),
        "command_timeout": statement_timeout.total_seconds(),
        "init": _init_connection,
        "server_settings": dict(server_settings or {}),
        "connection_class": _PooledConnection,
        # Connections idle this long are closed, so a restarted database is
        # reconnected cleanly instead of failing on a dead socket first.
        "max_inactive_connection_lifetime": 60.0,
    }
    # With min_size=0 this opens no connection, so it cannot fail on an absent database.
    if pooler is DatabasePooler.NONE:
        async with translate_errors():
            return await asyncpg.create_pool(dsn, connect=_connector(dsn), **options)
    if direct_dsn is None:
        raise ValueError(f"a pool behind {pooler.value} needs a direct URL for session locks")
    if server_settings:
        raise ValueError(f"{pooler.value} refuses startup parameters: {sorted(server_settings)}")
    async with translate_errors():
        session_pool = await asyncpg.create_pool(
            direct_dsn,
            connect=_connector(direct_dsn),
            **{
                **options,
                "min_size": 0,
                "max_size": _SESSION_POOL_MAX_SIZE,
                "server_settings": {"application_name": SESSION_LOCKS_APPLICATION_NAME},
            },
        )
        try:
            # PgBouncer 1.18 does not carry a named prepared statement from one transaction
            # to the next; with no cache asyncpg sends each query's Parse with its Execute.
            return await _TransactionPooledPool(
                dsn,
                connect=_connector(dsn),
                statement_cache_size=0,
                session_pool=session_pool,
                # What asyncpg.create_pool passes when not told otherwise.
                max_queries=50_000,
                loop=None,
                record_class=asyncpg.Record,
                **options,
            )
        except BaseException:
            await session_pool.close()
            raise


async def open_connections(pool: Pool, count: int) -> None:
    """Make the pool hold at least `count` open connections."""
    async with contextlib.AsyncExitStack() as held, translate_errors():
        for _ in range(count - pool.get_size()):
            await held.enter_async_context(pool.acquire())


# Migration 0028 distributes the tables where this extension is installed.
_HAS_CITUS = "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')"


async def has_citus(pool: Pool) -> bool:
    """Whether the database is a Citus coordinator (the citus extension is installed);
    DatabaseUnavailable if it cannot be asked."""
    async with translate_errors():
        return bool(await pool.fetchval(_HAS_CITUS))


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


@asynccontextmanager
async def session_advisory_lock(pool: Pool, key: int) -> AsyncIterator[Connection]:
    """Wait for a session-level advisory lock and hold it for the block, on the
    pooled connection it yields (for work under the lock)."""
    async with _session_lock(pool, key, wait=True) as conn:
        if conn is None:
            raise RuntimeError("pg_advisory_lock returned without the lock")
        yield conn


@asynccontextmanager
async def try_session_advisory_lock(pool: Pool, key: int) -> AsyncIterator[Connection | None]:
    """Like `session_advisory_lock`, but None at once if another session holds it."""
    async with _session_lock(pool, key, wait=False) as conn:
        yield conn


@asynccontextmanager
async def _session_lock(pool: Pool, key: int, *, wait: bool) -> AsyncIterator[Connection | None]:
    """Pooled connections go back without a reset (see `_PooledConnection`), so a lock
    must never go back with one: if taking or releasing it is interrupted, the
    connection is closed, and the lock with it. Behind PgBouncer, the lock and the work
    under it go on the direct pool: a pooled connection's next statement may run on
    another server session than the one holding the lock."""
    if isinstance(pool, _TransactionPooledPool):
        pool = pool.session_pool
    async with pool.acquire() as conn:
        try:
            locked = True if wait else bool(await conn.fetchval(_TRY_LOCK, key))
            if wait:
                await conn.execute(_LOCK, key)
        except BaseException:
            conn.terminate()
            raise
        if not locked:
            yield None
            return
        try:
            yield conn
        finally:
            try:
                await conn.execute(_UNLOCK, key)
            except BaseException:
                conn.terminate()
                raise
