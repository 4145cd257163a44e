"""A Refresh whose answer is lost on the network after the rotation committed: a real TCP
proxy drops the connection as the answer starts arriving. A retry minutes later with the
same idempotency key recovers the same successor, and raises no alarm."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.dropping_proxy import DroppingProxy, dropping_proxy
from tests.helpers import Registered, Stub, error_info, register, validate

pytestmark = pytest.mark.asyncio

# Minutes, well past the default 10 s grace window, well inside the 7 d idle timeout.
MINUTES_LATER = timedelta(minutes=5)


@pytest_asyncio.fixture
async def proxy(server: AuthServer) -> AsyncIterator[DroppingProxy]:
    async with dropping_proxy(server.port) as proxy:
        yield proxy


@pytest_asyncio.fixture
async def proxied(proxy: DroppingProxy) -> AsyncIterator[Stub]:
    """A stub through the proxy on a channel that does not retry by itself, so a lost
    answer reaches the test as it reaches a caller."""
    async with grpc.aio.insecure_channel(
        proxy.target, options=[("grpc.enable_retries", 0)]
    ) as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def reuses() -> float:
    value = REGISTRY.get_sample_value("authsvc_refreshes_total", {"outcome": "reused"})
    assert value is not None
    return value


async def current_token_hashes(pool: Pool, session_id: str) -> list[bytes]:
    rows = await pool.fetch(
        "SELECT token_hash FROM refresh_tokens WHERE session_id = $1 AND rotated_at IS NULL",
        uuid.UUID(session_id),
    )
    return [bytes(row["token_hash"]) for row in rows]


async def lose_the_answer(
    proxied: Stub, proxy: DroppingProxy, session: Registered, key: str
) -> None:
    """Refresh through the proxy, which drops the answer; the caller sees UNAVAILABLE."""
    proxy.drop_next_answers(1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await proxied.Refresh(
            pb.RefreshRequest(refresh_token=session.refresh_token, idempotency_key=key)
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert proxy.dropped == 1


async def test_a_retry_minutes_after_a_lost_answer_gets_the_successor_the_rotation_made(
    stub: Stub, proxied: Stub, proxy: DroppingProxy, pool: Pool, clock: FrozenClock
) -> None:
    session = await register(stub)
    key = str(uuid.uuid4())
    await lose_the_answer(proxied, proxy, session, key)
    # The rotation committed: the session's one current token is the successor made then.
    [successor_hash] = await current_token_hashes(pool, session.session_id)
    clock.advance(MINUTES_LATER)
    alarms = reuses()

    retried: pb.RefreshResponse = await stub.Refresh(
        pb.RefreshRequest(refresh_token=session.refresh_token, idempotency_key=key)
    )

    assert hashlib.sha256(retried.refresh_token.encode()).digest() == successor_hash
    assert await current_token_hashes(pool, session.session_id) == [successor_hash]
    validation = await validate(stub, retried.access_token)
    assert (validation.active, validation.session_id) == (True, session.session_id)
    assert reuses() == alarms


async def test_a_retry_after_a_lost_answer_with_another_key_is_reuse(
    stub: Stub, proxied: Stub, proxy: DroppingProxy, clock: FrozenClock
) -> None:
    session = await register(stub)
    await lose_the_answer(proxied, proxy, session, str(uuid.uuid4()))
    clock.advance(MINUTES_LATER)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Refresh(
            pb.RefreshRequest(
                refresh_token=session.refresh_token, idempotency_key=str(uuid.uuid4())
            )
        )

    assert error_info(caught.value)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
