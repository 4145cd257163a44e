"""Turn driver failures into core errors, so no asyncpg type leaves the store.

Each failure is described once here (`describe`) for the operator: what failed, never a
password. The description rides on DatabaseUnavailable.detail, which no client sees.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from authsvc.core.errors import DatabaseUnavailable

__all__ = ["describe", "redact_dsn", "translate_errors"]

# Failures that say "the database cannot be used right now", not "your query is wrong".
# Authentication and privileges are among them: an operator's fix (a password, a role,
# a grant) heals them without a restart, as the end of an outage does.
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
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InsufficientPrivilegeError,
    # A write that reached a server refusing writes: the primary, fenced for a switchover
    # (the pool then drops the connection: store/pool.py), or a standby.
    asyncpg.ReadOnlySQLTransactionError,
    # Raised when PostgreSQL shuts down under a pooled connection that asyncpg hands out
    # before it has noticed ("cannot switch to state 12; another operation (2) is in
    # progress"): the connection is dead, not the query wrong. asyncpg terminates it on
    # release, when its reset fails.
    asyncpg.InternalClientError,
)

# Citus's own SQLSTATEs (asyncpg knows no class for them) for a distributed execution that
# failed part-way and was rolled back whole: CIINF, an intermediate result gone because
# another part of the transaction failed, as when a shard move blocks writes to its shard
# (docs/scaling.md, "Adding a worker"). Worth a retry, as a deadlock is.
_UNAVAILABLE_STATES = frozenset({"CIINF"})

# What failed, by the driver's error class; the first match wins. PostgreSQL's own message
# follows (it names the role or database, never a password).
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (socket.gaierror, "unknown host"),
    (ConnectionRefusedError, "connection refused"),
    (FileNotFoundError, "connection refused (no server socket)"),
    (TimeoutError, "timed out"),
    (asyncpg.InvalidAuthorizationSpecificationError, "authentication failed"),
    (asyncpg.InvalidCatalogNameError, "no such database"),
    (asyncpg.InsufficientPrivilegeError, "permission denied"),
    (asyncpg.CannotConnectNowError, "database starting up or shutting down"),
    (asyncpg.TooManyConnectionsError, "too many connections"),
    (asyncpg.ReadOnlySQLTransactionError, "read-only server"),
)
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def describe(exc: BaseException) -> str:
    """One line saying what failed: connection refused, unknown host, authentication failed..."""
    label = next((label for kind, label in _KINDS if isinstance(exc, kind)), None)
    if label is None:
        # asyncpg tries each address of a host and raises a plain OSError listing them all.
        if isinstance(exc, OSError) and "Connect call failed" in str(exc):
            return "connection refused"
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{label}: {exc}"
    return label


def redact_dsn(dsn: str) -> str:
    """The URL with its password (in the user part or a query parameter) shown as ***."""
    parts = urlsplit(dsn)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = user.partition(":")[0] + ":***"
    query = urlencode(
        [
            (key, "***" if key in _SECRET_PARAMETERS else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/",
    )
    return urlunsplit(parts._replace(netloc=f"{user}{at}{host}", query=query))


@asynccontextmanager
async def translate_errors(dsn: str | None = None) -> AsyncIterator[None]:
    """Driver failures in the block become DatabaseUnavailable; `dsn`, when given (a
    connection attempt), is named in its detail, redacted."""
    try:
        yield
    except _UNAVAILABLE as exc:
        detail = describe(exc)
        if dsn is not None:
            detail = f"{detail} ({redact_dsn(dsn)})"
        raise DatabaseUnavailable(detail=detail) from exc
    except asyncpg.PostgresError as exc:
        if exc.sqlstate not in _UNAVAILABLE_STATES:
            raise
        raise DatabaseUnavailable(detail=describe(exc)) from exc
