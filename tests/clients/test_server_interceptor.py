"""TokenAuthInterceptor: a small real grpc.aio service that trusts authsvc tokens.

The protected service is a generic handler ("/demo.Whoami/...", raw bytes in and out) plus
the standard health service, so the interceptor is seen guarding services it knows nothing of.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio
from authsvc_client import (
    AuthClient,
    BearerAuthInterceptor,
    TokenAuthInterceptor,
    TokenPair,
    TokenVerifier,
    current_principal,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from tests.clients.conftest import RpcCounter
from tests.helpers import PASSWORD, bearer, error_info

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
PAST_EXPIRY = timedelta(minutes=16)
WHOAMI = "/demo.Whoami/Get"
WHOAMI_STREAM = "/demo.Whoami/Watch"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

Context = grpc.aio.ServicerContext[bytes, bytes]
Protect = Callable[..., Awaitable[int]]


def _who() -> bytes:
    principal = current_principal()
    return f"{principal.user_id} {principal.session_id}".encode()


async def _whoami(request: bytes, context: Context) -> bytes:
    return _who()


async def _whoami_stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
    for _ in range(2):
        yield _who()


@pytest_asyncio.fixture
async def protect(client: AuthClient, clock: FrozenClock) -> AsyncIterator[Protect]:
    """Factory: start the demo service behind a TokenAuthInterceptor; returns its port."""
    servers: list[grpc.aio.Server] = []

    async def start(
        *,
        online: bool = False,
        authsvc: AuthClient | None = None,
        aal2_methods: frozenset[str] = frozenset(),
    ) -> int:
        verifier = TokenVerifier(authsvc or client, now=clock.now, online=online)
        interceptor = TokenAuthInterceptor(
            verifier, public_methods={HEALTH_CHECK}, aal2_methods=aal2_methods
        )
        server = grpc.aio.server(interceptors=[interceptor])
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "demo.Whoami",
                    {
                        "Get": grpc.unary_unary_rpc_method_handler(_whoami),
                        "Watch": grpc.unary_stream_rpc_method_handler(_whoami_stream),
                    },
                )
            ]
        )
        health_servicer = health.aio.HealthServicer()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        await server.stop(None)


@pytest_asyncio.fixture
async def demo_port(protect: Protect) -> int:
    return await protect()


@pytest_asyncio.fixture
async def demo(demo_port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{demo_port}") as channel:
        yield channel


@pytest_asyncio.fixture
async def pair(server: AuthServer, clock: FrozenClock) -> TokenPair:
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as user:
        return await user.register(EMAIL, PASSWORD)


Metadata = tuple[tuple[str, str], ...]


async def _whoami_call(channel: grpc.aio.Channel, metadata: Metadata | None = None) -> bytes:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHOAMI)
    return await call(b"", metadata=metadata)


async def _refusal(
    channel: grpc.aio.Channel, metadata: Metadata | None = None
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _whoami_call(channel, metadata)
    code, reason, _ = error_info(caught.value)
    return code, reason


async def test_call_with_a_valid_token_reaches_the_handler_as_its_principal(
    demo: grpc.aio.Channel, pair: TokenPair
) -> None:
    response = await _whoami_call(demo, bearer(pair.access_token))

    assert response == f"{pair.user_id} {pair.session_id}".encode()


async def test_streaming_call_with_a_valid_token_sees_its_principal(
    demo: grpc.aio.Channel, pair: TokenPair
) -> None:
    watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = demo.unary_stream(WHOAMI_STREAM)

    responses = [r async for r in watch(b"", metadata=bearer(pair.access_token))]

    assert responses == [f"{pair.user_id} {pair.session_id}".encode()] * 2


async def test_an_aal2_method_refuses_a_password_token_as_step_up_required(
    protect: Protect, pair: TokenPair
) -> None:
    port = await protect(aal2_methods=frozenset({WHOAMI}))

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        refusal = await _refusal(channel, bearer(pair.access_token))
        watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(WHOAMI_STREAM)
        others = [r async for r in watch(b"", metadata=bearer(pair.access_token))]

    assert refusal == (grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED")
    assert len(others) == 2


async def test_call_without_a_token_is_refused_as_missing_credentials(
    demo: grpc.aio.Channel,
) -> None:
    refusal = await _refusal(demo)

    assert refusal == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


async def test_call_with_a_garbage_token_is_refused_as_token_invalid(
    demo: grpc.aio.Channel,
) -> None:
    refusal = await _refusal(demo, bearer("garbage"))

    assert refusal == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_call_with_another_scheme_is_refused_as_token_invalid(
    demo: grpc.aio.Channel, pair: TokenPair
) -> None:
    refusal = await _refusal(demo, (("authorization", f"Basic {pair.access_token}"),))

    assert refusal == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_call_with_an_expired_token_is_refused_as_token_expired(
    demo: grpc.aio.Channel, pair: TokenPair, clock: FrozenClock
) -> None:
    clock.advance(PAST_EXPIRY)

    refusal = await _refusal(demo, bearer(pair.access_token))

    assert refusal == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_online_call_with_a_revoked_sessions_token_is_refused_as_session_revoked(
    protect: Protect, pair: TokenPair, client: AuthClient
) -> None:
    port = await protect(online=True)
    await client.tokens.set_tokens(pair)
    await client.logout()

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        refusal = await _refusal(channel, bearer(pair.access_token))

    assert refusal == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


async def test_call_while_authsvc_is_unreachable_is_refused_as_unavailable(
    protect: Protect, pair: TokenPair
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    async with AuthClient.connect(nowhere) as unreachable:
        port = await protect(authsvc=unreachable)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _whoami_call(channel, bearer(pair.access_token))

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_public_method_is_served_without_a_token(demo: grpc.aio.Channel) -> None:
    response = await health_pb2_grpc.HealthStub(demo).Check(health_pb2.HealthCheckRequest())

    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_current_principal_outside_an_authenticated_call_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        current_principal()


async def test_bearer_interceptor_renews_a_token_the_protected_service_calls_expired(
    server: AuthServer, demo_port: int, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    start = clock.now()
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=lambda: start) as lagging:
        registered = await lagging.register(EMAIL, PASSWORD)
        clock.advance(PAST_EXPIRY)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{demo_port}", interceptors=[BearerAuthInterceptor(lagging.tokens)]
        ) as channel:
            response = await _whoami_call(channel)

    assert response == f"{registered.user_id} {registered.session_id}".encode()
    assert server_rpcs("Refresh") == 1
