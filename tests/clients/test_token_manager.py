"""TokenManager through AuthClient: proactive and reactive refresh, single flight, session end.

Refresh calls are counted on the server (its access log), so "one refresh" means one Refresh
RPC reached the service, not that the client thinks it sent one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from authsvc_client import (
    DEFAULT_REFRESH_SKEW,
    AuthClient,
    FileTokenStore,
    InMemoryTokenStore,
    RefreshTokenReused,
    SessionExpired,
    SessionPage,
    SessionRevoked,
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


@pytest_asyncio.fixture
async def watched(
    server: AuthServer, clock: FrozenClock, endings: SessionEndings
) -> AsyncIterator[AuthClient]:
    """A client on the server's clock whose session endings are recorded."""
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, on_session_expired=endings
    ) as client:
        yield client


@pytest_asyncio.fixture
async def lagging(server: AuthServer, clock: FrozenClock) -> AsyncIterator[AuthClient]:
    """A client whose clock stays where the server's started: it never refreshes on its own,
    so only the service's TOKEN_EXPIRED answer can make it refresh."""
    start = clock.now()
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=lambda: start) as client:
        yield client


async def _revoke(stub: Stub, pair: TokenPair) -> None:
    """End the session behind `pair` from outside the client, as another device would."""
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(pair.access_token))


async def _many_list_calls(client: AuthClient) -> list[SessionPage | BaseException]:
    return await asyncio.gather(
        *(client.list_sessions() for _ in range(CONCURRENT_CALLS)), return_exceptions=True
    )


# --- proactive ------------------------------------------------------------------------


async def test_access_token_within_the_skew_of_expiry_is_refreshed_before_the_call(
    client: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    registered = await client.register(EMAIL, PASSWORD)
    clock.advance(ACCESS_TOKEN_TTL - timedelta(seconds=30))

    await client.list_sessions()

    assert server_rpcs("Refresh") == 1
    current = await client.tokens.tokens()
    assert current is not None
    assert current.access_token != registered.access_token


async def test_access_token_at_exactly_the_skew_before_expiry_is_refreshed_before_the_call(
    client: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    await client.register(EMAIL, PASSWORD)
    clock.advance(ACCESS_TOKEN_TTL - DEFAULT_REFRESH_SKEW)

    await client.list_sessions()

    assert server_rpcs("Refresh") == 1


async def test_access_token_outside_the_skew_is_sent_without_refreshing(
    client: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    await client.register(EMAIL, PASSWORD)
    clock.advance(ACCESS_TOKEN_TTL - timedelta(seconds=90))

    await client.list_sessions()

    assert server_rpcs("Refresh") == 0


async def test_refresh_skew_is_configurable(
    server: AuthServer, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, refresh_skew=timedelta(minutes=5)
    ) as client:
        await client.register(EMAIL, PASSWORD)
        clock.advance(ACCESS_TOKEN_TTL - timedelta(minutes=4))

        await client.list_sessions()

    assert server_rpcs("Refresh") == 1


async def test_refresh_skew_is_capped_at_half_the_token_lifetime(
    server: AuthServer, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    # A skew longer than the token's whole life must not mean a refresh before every call.
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, refresh_skew=ACCESS_TOKEN_TTL * 2
    ) as client:
        await client.register(EMAIL, PASSWORD)
        clock.advance(ACCESS_TOKEN_TTL / 2 - timedelta(seconds=10))
        await client.list_sessions()
        await client.list_sessions()
        refreshes_before_half_life = server_rpcs("Refresh")

        clock.advance(timedelta(seconds=20))
        await client.list_sessions()

    assert refreshes_before_half_life == 0
    assert server_rpcs("Refresh") == 1


async def test_concurrent_calls_with_an_expired_token_share_one_refresh(
    client: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    await client.register(EMAIL, PASSWORD)
    clock.advance(PAST_EXPIRY)

    outcomes = await _many_list_calls(client)

    assert [o for o in outcomes if not isinstance(o, SessionPage)] == []
    assert server_rpcs("Refresh") == 1


# --- reactive -------------------------------------------------------------------------


async def test_call_rejected_as_expired_is_refreshed_and_retried_once(
    lagging: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    registered = await lagging.register(EMAIL, PASSWORD)
    clock.advance(PAST_EXPIRY)

    page = await lagging.list_sessions()

    assert [s.session_id for s in page.sessions] == [registered.session_id]
    assert (server_rpcs("ListSessions"), server_rpcs("Refresh")) == (2, 1)


async def test_concurrent_calls_rejected_as_expired_share_one_refresh(
    lagging: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    await lagging.register(EMAIL, PASSWORD)
    clock.advance(PAST_EXPIRY)

    outcomes = await _many_list_calls(lagging)

    assert [o for o in outcomes if not isinstance(o, SessionPage)] == []
    assert server_rpcs("Refresh") == 1


# --- the session ends -----------------------------------------------------------------


async def test_concurrent_calls_on_a_revoked_session_attempt_one_refresh_and_all_raise(
    watched: AuthClient, stub: Stub, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    await _revoke(stub, await watched.register(EMAIL, PASSWORD))
    clock.advance(PAST_EXPIRY)

    outcomes = await _many_list_calls(watched)

    assert {(type(o), getattr(o, "reason", None)) for o in outcomes} == {
        (SessionRevoked, "SESSION_REVOKED")
    }
    assert server_rpcs("Refresh") == 1


async def test_concurrent_calls_on_a_revoked_session_tell_the_callback_once(
    watched: AuthClient, stub: Stub, clock: FrozenClock, endings: SessionEndings
) -> None:
    await _revoke(stub, await watched.register(EMAIL, PASSWORD))
    clock.advance(PAST_EXPIRY)

    await _many_list_calls(watched)

    assert [e.reason for e in endings.errors] == ["SESSION_REVOKED"]


async def test_calls_after_the_session_ended_raise_without_reaching_the_service(
    watched: AuthClient, stub: Stub, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    await _revoke(stub, await watched.register(EMAIL, PASSWORD))
    clock.advance(PAST_EXPIRY)
    with pytest.raises(SessionExpired):
        await watched.list_sessions()
    before = (server_rpcs("ListSessions"), server_rpcs("Refresh"))

    with pytest.raises(SessionExpired) as caught:
        await watched.list_sessions()

    assert caught.value.reason == "SESSION_REVOKED"
    assert (server_rpcs("ListSessions"), server_rpcs("Refresh")) == before


async def test_call_on_a_revoked_session_with_a_live_token_ends_it_without_refreshing(
    watched: AuthClient,
    stub: Stub,
    endings: SessionEndings,
    server_rpcs: RpcCounter,
) -> None:
    await _revoke(stub, await watched.register(EMAIL, PASSWORD))

    with pytest.raises(SessionExpired):
        await watched.list_sessions()

    assert [e.reason for e in endings.errors] == ["SESSION_REVOKED"]
    assert server_rpcs("Refresh") == 0
    assert await watched.tokens.tokens() is None


async def test_replayed_refresh_token_ends_the_session_as_reused(
    watched: AuthClient, stub: Stub, clock: FrozenClock, endings: SessionEndings
) -> None:
    registered = await watched.register(EMAIL, PASSWORD)
    # A thief rotates the client's refresh token first; the client's copy is now spent.
    await stub.Refresh(pb.RefreshRequest(refresh_token=registered.refresh_token))
    clock.advance(PAST_EXPIRY)

    with pytest.raises(RefreshTokenReused) as caught:
        await watched.list_sessions()

    assert caught.value.reason == "REFRESH_TOKEN_REUSED"
    assert [e.reason for e in endings.errors] == ["REFRESH_TOKEN_REUSED"]


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


async def test_signing_in_again_after_the_session_ended_resumes_calls(
    watched: AuthClient, stub: Stub
) -> None:
    await _revoke(stub, await watched.register(EMAIL, PASSWORD))
    with pytest.raises(SessionExpired):
        await watched.list_sessions()
    again = await watched.login(EMAIL, PASSWORD)

    page = await watched.list_sessions()

    assert [s.session_id for s in page.sessions] == [again.session_id]


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


# --- stores ---------------------------------------------------------------------------


async def test_file_store_keeps_a_cli_signed_in_across_runs(
    server: AuthServer, clock: FrozenClock, tmp_path: Path
) -> None:
    path = tmp_path / "tokens.json"
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, store=FileTokenStore(path)
    ) as first_run:
        registered = await first_run.register(EMAIL, PASSWORD)

    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, store=FileTokenStore(path)
    ) as second_run:
        page = await second_run.list_sessions()

    assert [s.session_id for s in page.sessions] == [registered.session_id]


async def test_refreshed_tokens_are_written_to_the_store(
    server: AuthServer, clock: FrozenClock, tmp_path: Path
) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now, store=store) as client:
        registered = await client.register(EMAIL, PASSWORD)
        clock.advance(PAST_EXPIRY)

        await client.list_sessions()

    stored = await store.load()
    assert stored is not None
    assert stored.refresh_token != registered.refresh_token


async def test_ended_session_is_removed_from_the_store(
    server: AuthServer, clock: FrozenClock, stub: Stub, tmp_path: Path
) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now, store=store) as client:
        await _revoke(stub, await client.register(EMAIL, PASSWORD))

        with pytest.raises(SessionExpired):
            await client.list_sessions()

    assert await store.load() is None


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
