"""The Python client's Refresh is exactly once: it sends an idempotency key with every
rotation, keeps it across its own retries (the channel's and the TokenManager's), and its
channel retries as the published service config says. Through a real TCP proxy that loses
answers after the server committed them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import authsvc_client
import grpc
import pytest
import pytest_asyncio
from authsvc_client import DEFAULT_SERVICE_CONFIG, AuthClient, Unavailable

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from tests.clients.conftest import REPO_ROOT, RpcCounter
from tests.dropping_proxy import DroppingProxy, dropping_proxy
from tests.helpers import PASSWORD

EMAIL = "ada@example.com"
# Past the default 10 s refresh grace window: a replay without the key would be reuse.
PAST_GRACE = timedelta(minutes=5)
PUBLISHED = REPO_ROOT / "clients" / "service_config.json"


@pytest_asyncio.fixture
async def proxy(server: AuthServer) -> AsyncIterator[DroppingProxy]:
    async with dropping_proxy(server.port) as proxy:
        yield proxy


@pytest_asyncio.fixture
async def proxied_client(proxy: DroppingProxy, clock: FrozenClock) -> AsyncIterator[AuthClient]:
    """A client with its defaults, through the proxy, signed in."""
    async with AuthClient.connect(proxy.target, now=clock.now) as client:
        await client.register(EMAIL, PASSWORD)
        yield client


def test_the_default_service_config_is_the_published_file() -> None:
    assert PUBLISHED.read_text(encoding="utf-8") == DEFAULT_SERVICE_CONFIG


def test_the_published_service_config_retries_only_rpcs_safe_to_repeat() -> None:
    config = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    retried = {
        name["method"]
        for method in config["methodConfig"]
        if "retryPolicy" in method
        for name in method["name"]
    }
    assert retried == {
        "Refresh",
        "ValidateToken",
        "GetJwks",
        "ListSessions",
        "GetSession",
        "RevokeSession",
        "Logout",
    }
    service = authsvc_client.v1.auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"]
    assert retried <= set(service.methods_by_name)


@pytest.mark.asyncio
async def test_the_channel_retries_a_refresh_whose_answer_was_lost_and_keeps_a_working_pair(
    proxied_client: AuthClient,
    proxy: DroppingProxy,
    server_rpcs: RpcCounter,
    clock: FrozenClock,
) -> None:
    before = server_rpcs("Refresh")
    proxy.drop_next_answers(1)

    pair = await proxied_client.refresh()

    assert proxy.dropped == 1
    assert server_rpcs("Refresh") - before == 2  # the lost one, and the channel's retry
    assert (await proxied_client.tokens.tokens()) == pair
    clock.advance(PAST_GRACE)
    assert (await proxied_client.refresh()).session_id == pair.session_id
    page = await proxied_client.list_sessions()
    assert [s.is_current for s in page.sessions] == [True]


@pytest.mark.asyncio
async def test_the_token_manager_retries_a_rotation_with_its_key_after_the_channel_gave_up(
    proxied_client: AuthClient, proxy: DroppingProxy, clock: FrozenClock
) -> None:
    # Every attempt the channel makes is lost; the server rotated on the first.
    proxy.drop_next_answers(4)
    with pytest.raises(Unavailable):
        await proxied_client.refresh()
    assert proxy.dropped == 4
    clock.advance(PAST_GRACE)

    # The proxy's dropped connections can fail the next attempt's send too ("Stream
    # removed"), after the failures above used up the channel's retry budget: that is one
    # more lost attempt of the same rotation, which the manager retries with the same key.
    for _ in range(3):
        try:
            pair = await proxied_client.refresh()
            break
        except Unavailable:
            continue
    else:
        pytest.fail("the rotation never got through the proxy")

    # With a new key this would be REFRESH_TOKEN_REUSED, and the session revoked.
    page = await proxied_client.list_sessions()
    assert [s.session_id for s in page.sessions] == [pair.session_id]


class RefreshKeys(grpc.aio.UnaryUnaryClientInterceptor):
    """Records the idempotency key of each Refresh the client makes (once per call: the
    channel's own retries happen below interceptors)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        if details.method.endswith(b"/Refresh"):
            self.keys.append(request.idempotency_key)
        return await continuation(details, request)


@pytest.mark.asyncio
async def test_each_rotation_sends_a_new_uuid_and_a_retried_one_the_same(
    proxy: DroppingProxy, clock: FrozenClock
) -> None:
    recorded = RefreshKeys()
    async with grpc.aio.insecure_channel(
        proxy.target,
        options=[("grpc.service_config", DEFAULT_SERVICE_CONFIG)],
        interceptors=[recorded],
    ) as channel:
        client = AuthClient(channel, now=clock.now)
        await client.register(EMAIL, PASSWORD)
        await client.refresh()
        proxy.drop_next_answers(4)
        with pytest.raises(Unavailable):
            await client.refresh()
        await client.refresh()

    first, second, retried = recorded.keys
    assert uuid.UUID(first) != uuid.UUID(second)
    assert retried == second


@pytest.mark.asyncio
async def test_a_key_of_the_callers_own_is_sent(
    proxied_client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    first = await proxied_client.tokens.tokens()
    assert first is not None
    key = f"caller-{uuid.uuid4()}"
    answered = await proxied_client.refresh(idempotency_key=key)
    clock.advance(PAST_GRACE)

    # The same token and the caller's key, from elsewhere: the same successor.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = authsvc_client.v1.auth_service_pb2_grpc.AuthServiceStub(channel)
        again = await stub.Refresh(
            authsvc_client.v1.auth_service_pb2.RefreshRequest(
                refresh_token=first.refresh_token, idempotency_key=key
            )
        )

    assert again.refresh_token == answered.refresh_token
