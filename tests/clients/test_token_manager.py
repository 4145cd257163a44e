"""TokenManager through AuthClient: what the shared scenario table
(clients/testdata/token_manager_scenarios.json, run by test_token_manager_scenarios.py) does
not hold, because the Node suite cannot set it up the same way or it is Python's own.

Refresh calls are counted on the server (its access log), so "one refresh" means one Refresh
RPC reached the service, not that the client thinks it sent one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from authsvc_client import (
    AuthClient,
    InMemoryTokenStore,
    SessionExpired,
    SessionPage,
    TokenPair,
    Unavailable,
)

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.clients.conftest import RpcCounter
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, bearer

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
ACCESS_TOKEN_TTL = timedelta(minutes=15)
PAST_EXPIRY = ACCESS_TOKEN_TTL + timedelta(minutes=1)
CONCURRENT_CALLS = 100


class SessionEndings:
    """An on_session_expired callback that remembers what it was told."""

    def __init__(self) -> None:
        self.errors: list[SessionExpired] = []

    def __call__(self, error: SessionExpired) -> None:
        self.errors.append(error)


@pytest.fixture
def endings() -> SessionEndings:
    return SessionEndings()


async def _revoke(stub: Stub, pair: TokenPair) -> None:
    """End the session behind `pair` from outside the client, as another device would."""
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(pair.access_token))


async def _many_list_calls(client: AuthClient) -> list[SessionPage | BaseException]:
    return await asyncio.gather(
        *(client.list_sessions() for _ in range(CONCURRENT_CALLS)), return_exceptions=True
    )


async def test_session_past_its_idle_timeout_ends_on_the_refresh(
    launch: Launch, clock: FrozenClock, endings: SessionEndings, server_rpcs: RpcCounter
) -> None:
    launched = await launch(session_idle_timeout="1h")
    async with AuthClient.connect(
        f"127.0.0.1:{launched.server.port}", now=clock.now, on_session_expired=endings
    ) as client:
        await client.register(EMAIL, PASSWORD)
        clock.advance(timedelta(hours=1, seconds=1))

        outcomes = await _many_list_calls(client)

        assert await client.tokens.tokens() is None
    assert {(type(o), getattr(o, "reason", None)) for o in outcomes} == {
        (SessionExpired, "SESSION_EXPIRED")
    }
    assert [e.reason for e in endings.errors] == ["SESSION_EXPIRED"]
    assert server_rpcs("Refresh") == 1


async def test_unreachable_service_during_refresh_keeps_the_session(
    launch: Launch, clock: FrozenClock, endings: SessionEndings
) -> None:
    launched = await launch()
    async with AuthClient.connect(
        f"127.0.0.1:{launched.server.port}", now=clock.now, on_session_expired=endings
    ) as client:
        registered = await client.register(EMAIL, PASSWORD)
        await launched.server.stop(None)
        clock.advance(PAST_EXPIRY)

        with pytest.raises(Unavailable):
            await client.list_sessions()

        assert await client.tokens.tokens() == registered
    assert endings.errors == []


async def test_async_callback_is_awaited_when_the_session_ends(
    server: AuthServer, clock: FrozenClock, stub: Stub
) -> None:
    told = asyncio.Event()

    async def on_session_expired(error: SessionExpired) -> None:
        told.set()

    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, on_session_expired=on_session_expired
    ) as client:
        await _revoke(stub, await client.register(EMAIL, PASSWORD))
        with pytest.raises(SessionExpired):
            await client.list_sessions()

    assert told.is_set()


class UnclearableStore(InMemoryTokenStore):
    """A store whose clear fails, as a file store's does when its disk has gone away."""

    async def clear(self) -> None:
        raise OSError("the disk has gone away")


async def test_a_store_that_cannot_clear_still_ends_the_session_and_logs_store_failed(
    server: AuthServer,
    clock: FrozenClock,
    stub: Stub,
    endings: SessionEndings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="authsvc_client")
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}",
        now=clock.now,
        store=UnclearableStore(),
        on_session_expired=endings,
    ) as client:
        await _revoke(stub, await client.register(EMAIL, PASSWORD))

        with pytest.raises(SessionExpired):
            await client.list_sessions()

    assert [e.reason for e in endings.errors] == ["SESSION_REVOKED"]
    failures = [r for r in caplog.records if getattr(r, "event", None) == "store_failed"]
    assert [(r.levelno, r.exc_info and r.exc_info[0]) for r in failures] == [
        (logging.ERROR, OSError)
    ]
