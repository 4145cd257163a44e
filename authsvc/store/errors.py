"""Turn driver failures into core errors, so no asyncpg type leaves the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from authsvc.core.errors import DatabaseUnavailable

__all__ = ["translate_errors"]

# Failures that say "the database is not there right now", not "your query is wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.InvalidCatalogNameError,
    # Raised when PostgreSQL shuts down under a pooled connection that asyncpg hands out
    # before it has noticed ("cannot switch to state 12; another operation (2) is in
    # progress"): the connection is dead, not the query wrong. asyncpg terminates it on
    # release, when its reset fails.
    asyncpg.InternalClientError,
)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable("database unavailable") from exc
