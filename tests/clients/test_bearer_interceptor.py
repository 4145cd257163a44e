"""BearerAuthInterceptor: the managed access token on a plain generated stub's calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import grpc
import pytest
from authsvc_client import AuthClient, BearerAuthInterceptor, SessionExpired

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.clients.conftest import RpcCounter
from tests.helpers import PASSWORD, Stub, bearer, error_info

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
PAST_EXPIRY = timedelta(minutes=16)


@asynccontextmanager
async def _intercepted_stub(server: AuthServer, client: AuthClient) -> AsyncIterator[Stub]:
    """The generated AuthService stub on a channel carrying `client`'s tokens."""
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}", interceptors=[BearerAuthInterceptor(client.tokens)]
    ) as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


async def test_raw_stub_call_carries_the_managed_access_token(
    server: AuthServer, client: AuthClient
) -> None:
    registered = await client.register(EMAIL, PASSWORD)

    async with _intercepted_stub(server, client) as stub:
        response = await stub.ListSessions(pb.ListSessionsRequest())

    assert [(s.session_id, s.current) for s in response.sessions] == [
        (str(registered.session_id), True)
    ]


async def test_raw_stub_call_rejected_as_expired_is_retried_with_a_refreshed_token(
    server: AuthServer, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    start = clock.now()
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=lambda: start) as lagging:
        await lagging.register(EMAIL, PASSWORD)
        clock.advance(PAST_EXPIRY)

        async with _intercepted_stub(server, lagging) as stub:
            response = await stub.ListSessions(pb.ListSessionsRequest())

    assert len(response.sessions) == 1
    assert (server_rpcs("ListSessions"), server_rpcs("Refresh")) == (2, 1)


async def test_raw_stub_call_with_its_own_authorization_is_left_alone(
    server: AuthServer, client: AuthClient, clock: FrozenClock
) -> None:
    await client.register(EMAIL, PASSWORD)
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as other:
        theirs = await other.login(EMAIL, PASSWORD)

    async with _intercepted_stub(server, client) as stub:
        response = await stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(theirs.access_token)
        )

    assert [s.session_id for s in response.sessions if s.current] == [str(theirs.session_id)]


async def test_raw_stub_call_when_signed_out_goes_without_credentials(
    server: AuthServer, client: AuthClient
) -> None:
    async with _intercepted_stub(server, client) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListSessions(pb.ListSessionsRequest())

    assert error_info(caught.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


async def test_raw_stub_call_after_the_session_ended_raises_session_expired_unsent(
    server: AuthServer, client: AuthClient, stub: Stub, server_rpcs: RpcCounter
) -> None:
    registered = await client.register(EMAIL, PASSWORD)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(registered.access_token))
    with pytest.raises(SessionExpired):
        await client.list_sessions()
    before = server_rpcs("ListSessions")

    async with _intercepted_stub(server, client) as intercepted:
        with pytest.raises(SessionExpired):
            await intercepted.ListSessions(pb.ListSessionsRequest())

    assert server_rpcs("ListSessions") == before


async def test_raw_stub_call_on_a_revoked_session_makes_the_manager_forget_it(
    server: AuthServer, client: AuthClient, stub: Stub
) -> None:
    registered = await client.register(EMAIL, PASSWORD)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(registered.access_token))

    async with _intercepted_stub(server, client) as intercepted:
        with pytest.raises(grpc.aio.AioRpcError):
            await intercepted.ListSessions(pb.ListSessionsRequest())

    assert await client.tokens.tokens() is None
