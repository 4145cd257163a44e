"""Faults: a server killed mid-call, a starved connection pool, SIGTERM under load.

Row locks taken from a test connection hold a call inside the server at a known
point; the tests wait for that (PostgreSQL reports the blocked backend) instead
of waiting for time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.domain.refresh_tokens import hash_refresh_token
from authsvc.store.pool import Pool
from authsvc.store.sweep import SWEEP_LOCK_KEY
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch, Launched, NewDatabase, pool_on
from tests.helpers import PASSWORD, Registered, Stub, bearer, login, refresh, register, validate
from tests.processes import (
    WAIT,
    ServerGroup,
    ServerProcess,
    eventually,
    server_group,
    started,
)

pytestmark = pytest.mark.asyncio


# Backends of this database waiting for a lock (the test's own is never one).
_LOCK_WAITERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'
"""
_LIVE_TOKENS_PER_SESSION = """
SELECT s.id, count(t.id) FILTER (WHERE t.rotated_at IS NULL) AS live
FROM sessions s LEFT JOIN refresh_tokens t ON t.session_id = s.id
GROUP BY s.id
"""
# Deadline of the calls made against a starved pool, and how far past it they
# may return: a bound that only a hang reaches, not a timing assertion.
DEADLINE = 1.0
DEADLINE_SLACK = 2.0
# Shutdown grace of the server under load: the calls held on a row lock outlast it.
SHUTDOWN_GRACE = "2s"


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[ServerGroup]:
    async with server_group() as group:
        yield group


@asynccontextmanager
async def row_locked(pool: Pool, session_id: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Hold a session's row lock (as a Refresh takes it); yields an idempotent release."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", uuid.UUID(session_id))
        released = False

        async def release() -> None:
            nonlocal released
            if not released:
                released = True
                await transaction.rollback()

        try:
            yield release
        finally:
            await release()


async def until_lock_waiters(pool: Pool, count: int) -> None:
    """Wait until `count` backends of the pool's database are blocked on a lock."""

    async def blocked() -> bool:
        return bool(await pool.fetchval(_LOCK_WAITERS) >= count)

    await eventually(blocked)


def code_of(outcome: object) -> grpc.StatusCode:
    if isinstance(outcome, grpc.aio.AioRpcError):
        return outcome.code()
    if isinstance(outcome, BaseException):
        raise outcome
    return grpc.StatusCode.OK


# --- a server killed in the middle of a Refresh --------------------------------


async def test_refresh_cut_off_by_a_server_crash_succeeds_when_retried_on_a_new_server(
    new_database: NewDatabase, servers: ServerGroup
) -> None:
    dsn = await new_database()
    crashing = await servers.start_ready(dsn)
    user = await register(crashing.stub)
    async with pool_on(dsn, max_size=2) as pool:
        async with row_locked(pool, user.session_id):
            in_flight = started(
                crashing.stub.Refresh(
                    pb.RefreshRequest(refresh_token=user.refresh_token), timeout=WAIT
                )
            )
            await until_lock_waiters(pool, 1)  # the Refresh is inside the server, on the lock
            await crashing.kill()
            with pytest.raises(grpc.aio.AioRpcError) as cut_off:
                await in_flight
        replacement = await servers.start_ready(dsn)

        retried = await refresh(replacement.stub, user.refresh_token)

        validation = await validate(replacement.stub, retried.access_token)
        revoked_at = await pool.fetchval(
            "SELECT revoked_at FROM sessions WHERE id = $1", uuid.UUID(user.session_id)
        )
        chain = await pool.fetch(
            "SELECT token_hash, rotated_at IS NOT NULL AS rotated FROM refresh_tokens"
            " WHERE session_id = $1 ORDER BY created_at",
            uuid.UUID(user.session_id),
        )
    assert cut_off.value.code() == grpc.StatusCode.UNAVAILABLE
    assert retried.session_id == user.session_id
    assert validation.active, validation.inactive_reason
    assert revoked_at is None
    # The killed server's rotation committed once the lock was released (PostgreSQL does
    # not notice a dead client while it waits on a lock); the retry, within the grace
    # window, was handed that successor, not a second one, and raised no reuse alarm.
    assert [(bytes(row["token_hash"]), row["rotated"]) for row in chain] == [
        (hash_refresh_token(user.refresh_token), True),
        (hash_refresh_token(retried.refresh_token), False),
    ]


# --- every pool connection busy ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Starved:
    """An in-process server whose two pool connections wait on a row lock."""

    stub: Stub
    health: Any
    user: Registered
    release: Callable[[], Awaitable[None]]
    blocked: list[asyncio.Task[pb.RefreshResponse]]


@pytest_asyncio.fixture
async def two_connection_server(launch: Launch, pool: Pool, pg_dsn: str) -> AsyncIterator[Launched]:
    """An in-process server on a pool of 2 connections, its sweeper kept out.

    The sweeper holds one connection for the sweep lock while it takes another
    per batch; it finds the lock taken here, so the test's calls alone hold the pool.
    """
    async with (
        pool.acquire() as sweep_lock,
        sweep_lock.transaction(),
        # Long statement timeout: calls blocked on a row lock keep their connection.
        pool_on(pg_dsn, max_size=2, db_statement_timeout="60s") as small_pool,
    ):
        await sweep_lock.execute("SELECT pg_advisory_xact_lock($1)", SWEEP_LOCK_KEY)
        launched = await launch(server_pool=small_pool)
        try:
            yield launched
        finally:
            await launched.server.stop(None)


@pytest_asyncio.fixture
async def starved(two_connection_server: Launched, pool: Pool) -> AsyncIterator[Starved]:
    """Both pool connections held by Refreshes waiting on a row lock."""
    stub = two_connection_server.stub
    user = await register(stub)
    async with row_locked(pool, user.session_id) as release:
        blocked = [
            started(stub.Refresh(pb.RefreshRequest(refresh_token=user.refresh_token), timeout=WAIT))
            for _ in range(2)
        ]
        await until_lock_waiters(pool, 2)  # both pool connections are taken
        port = two_connection_server.server.port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Starved(stub, health_pb2_grpc.HealthStub(channel), user, release, blocked)
    await asyncio.gather(*blocked, return_exceptions=True)


async def test_calls_on_a_starved_pool_end_within_their_deadline(starved: Starved) -> None:
    async with asyncio.timeout(DEADLINE + DEADLINE_SLACK):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await starved.stub.ValidateToken(
                pb.ValidateTokenRequest(access_token=starved.user.access_token), timeout=DEADLINE
            )

    assert caught.value.code() in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    )


async def test_health_check_answers_while_the_pool_is_starved(starved: Starved) -> None:
    async with asyncio.timeout(DEADLINE + DEADLINE_SLACK):
        response = await starved.health.Check(
            health_pb2.HealthCheckRequest(service=""), timeout=DEADLINE
        )

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_calls_succeed_again_once_the_starved_pool_is_released(starved: Starved) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await starved.stub.ValidateToken(
            pb.ValidateTokenRequest(access_token=starved.user.access_token), timeout=DEADLINE
        )

    await starved.release()

    held = await asyncio.gather(*starved.blocked)
    validation = await validate(starved.stub, held[0].access_token)
    page = await starved.stub.ListSessions(
        pb.ListSessionsRequest(page_size=10), metadata=bearer(held[0].access_token), timeout=WAIT
    )
    assert {answer.refresh_token for answer in held} == {held[1].refresh_token}
    assert validation.active, validation.inactive_reason
    assert [s.session_id for s in page.sessions] == [starved.user.session_id]


async def test_calls_cut_off_by_their_deadline_in_the_database_give_their_connections_back(
    two_connection_server: Launched, pool: Pool
) -> None:
    stub = two_connection_server.stub
    user = await register(stub)
    async with row_locked(pool, user.session_id):
        # Two wait on the row lock, holding both connections; two wait for a connection.
        cut_off = await asyncio.gather(
            *(
                stub.Refresh(pb.RefreshRequest(refresh_token=user.refresh_token), timeout=DEADLINE)
                for _ in range(4)
            ),
            return_exceptions=True,
        )

    # Three at once need both connections back; a leaked one would hold them up to WAIT.
    after = await asyncio.gather(
        stub.Refresh(pb.RefreshRequest(refresh_token=user.refresh_token), timeout=WAIT),
        stub.ValidateToken(pb.ValidateTokenRequest(access_token=user.access_token), timeout=WAIT),
        stub.ListSessions(
            pb.ListSessionsRequest(page_size=10), metadata=bearer(user.access_token), timeout=WAIT
        ),
    )

    assert [code_of(o) for o in cut_off] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4
    assert after[0].session_id == user.session_id
    assert after[1].active, after[1].inactive_reason
    assert [s.session_id for s in after[2].sessions] == [user.session_id]


# --- SIGTERM while 100 calls are in flight --------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One call of the load, made when started (a stub call starts its RPC at once)."""

    rpc: str
    request: Any
    session: int | None = None  # the session a Refresh presents the token of
    access_token: str = ""  # sent as the bearer token when set

    def start(self, stub: Stub) -> asyncio.Task[Any]:
        metadata = bearer(self.access_token) if self.access_token else None
        method = getattr(stub, self.rpc)
        return started(method(self.request, metadata=metadata, timeout=WAIT))


def _load(emails: list[str], sessions: list[pb.LoginResponse], held: int) -> list[Call]:
    """100 calls: 2 Refreshes of session `held` (to block on its row lock), and a mix."""

    def refresh_of(i: int) -> Call:
        return Call("Refresh", pb.RefreshRequest(refresh_token=sessions[i].refresh_token), i)

    calls = [refresh_of(held) for _ in range(2)]
    # Each other session is refreshed twice concurrently: one rotation, one grace answer.
    calls += [refresh_of(i) for i in range(len(sessions)) if i != held for _ in range(2)]
    calls += [
        Call("Login", pb.LoginRequest(email=emails[n % len(emails)], password=PASSWORD))
        for n in range(25)
    ]
    calls += [
        Call(
            "ValidateToken",
            pb.ValidateTokenRequest(access_token=sessions[n % len(sessions)].access_token),
        )
        for n in range(25)
    ]
    calls += [
        Call(
            "ListSessions",
            pb.ListSessionsRequest(page_size=5),
            access_token=sessions[n % len(sessions)].access_token,
        )
        for n in range(100 - len(calls))
    ]
    return calls


async def test_sigterm_under_load_ends_every_call_cleanly_and_leaves_nothing_half_written(
    new_database: NewDatabase, servers: ServerGroup
) -> None:
    dsn = await new_database()
    # A long grace window, so that a rotation whose answer was lost still answers below.
    settings = {"AUTHSVC_REFRESH_GRACE_PERIOD": "60s"}
    server = await servers.start_ready(dsn, AUTHSVC_SHUTDOWN_GRACE=SHUTDOWN_GRACE, **settings)
    emails = [f"user{n}@example.com" for n in range(4)]
    for email in emails:
        await register(server.stub, email=email)
    sessions = [await login(server.stub, email=email) for email in emails for _ in range(3)]
    held = 0
    calls = _load(emails, sessions, held)
    async with pool_on(dsn, max_size=2) as pool:
        async with row_locked(pool, sessions[held].session_id):
            tasks = [call.start(server.stub) for call in calls]
            await until_lock_waiters(pool, 2)  # the held Refreshes are in the server

            server.terminate()

            exit_code = await server.wait()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        live_tokens = {row["id"]: row["live"] for row in await pool.fetch(_LIVE_TOKENS_PER_SESSION)}
        after = await servers.start_ready(dsn, **settings)
        usable = await _refresh_every_known_token(after, calls, outcomes, sessions)

    codes = [(c.rpc, code_of(o)) for c, o in zip(calls, outcomes, strict=True)]
    unclean = [
        (kind, code)
        for kind, code in codes
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    ]
    assert len(calls) == 100
    assert unclean == []
    assert exit_code == 0, server.stderr_tail
    assert live_tokens
    assert set(live_tokens.values()) == {1}, live_tokens
    assert all(len(tokens) == 1 for tokens in _successors(calls, outcomes).values())
    assert usable == {}


async def test_sigterm_turns_health_not_serving_while_in_flight_calls_finish(
    new_database: NewDatabase, servers: ServerGroup
) -> None:
    dsn = await new_database()
    server = await servers.start_ready(dsn)
    user = await register(server.stub)
    watch = server.health.Watch(health_pb2.HealthCheckRequest(service=""))
    statuses = [(await anext(aiter(watch))).status]
    async with pool_on(dsn, max_size=2) as pool, row_locked(pool, user.session_id) as release:
        in_flight = started(
            server.stub.Refresh(pb.RefreshRequest(refresh_token=user.refresh_token), timeout=WAIT)
        )
        await until_lock_waiters(pool, 1)

        server.terminate()

        async with asyncio.timeout(WAIT):
            statuses.append((await anext(aiter(watch))).status)
        # An open Watch is an RPC in flight too: it would hold the stop for the whole grace.
        watch.cancel()
        await release()
        finished = await in_flight
        exit_code = await server.wait()
    assert statuses == [
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    ]
    assert finished.session_id == user.session_id
    assert exit_code == 0, server.stderr_tail


def _successors(calls: list[Call], outcomes: list[Any]) -> dict[int, set[str]]:
    """The refresh tokens the OK Refreshes returned, by session."""
    found: dict[int, set[str]] = {}
    for call, outcome in zip(calls, outcomes, strict=True):
        if call.session is not None and code_of(outcome) == grpc.StatusCode.OK:
            found.setdefault(call.session, set()).add(outcome.refresh_token)
    return found


async def _refresh_every_known_token(
    server: ServerProcess,
    calls: list[Call],
    outcomes: list[Any],
    sessions: list[pb.LoginResponse],
) -> dict[str, str]:
    """Refresh the newest token the client holds for each session; failures by token.

    That is the token an OK Refresh or Login returned, else the session's first one.
    """
    newest = {i: s.refresh_token for i, s in enumerate(sessions)}
    from_logins = []
    for call, outcome in zip(calls, outcomes, strict=True):
        if code_of(outcome) != grpc.StatusCode.OK:
            continue
        if call.rpc == "Refresh":
            assert call.session is not None
            newest[call.session] = outcome.refresh_token
        elif call.rpc == "Login":
            from_logins.append(outcome.refresh_token)
    tokens = sorted({*newest.values(), *from_logins})
    results = await asyncio.gather(
        *(refresh(server.stub, token) for token in tokens), return_exceptions=True
    )
    return {
        token[:8]: f"{code_of(result).name}"
        for token, result in zip(tokens, results, strict=True)
        if code_of(result) != grpc.StatusCode.OK
    }
