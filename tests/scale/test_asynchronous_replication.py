"""What asynchronous replication loses at a failover, shown rather than argued
(docs/operations.md, "Failover"): a rotation the client saw acknowledged that never reached the
standby. The standby is stopped (a standby lagging behind, made certain), the client refreshes
on the primary, the primary is killed and the standby promoted without it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import pytest_asyncio

from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import Pair, Stub, bearer, error_info, login, pair_of, register
from tests.processes import WAIT, ServerProcess
from tests.scale.failover_scenario import serve_on
from tests.scale.replicated_postgres import ReplicatedPostgres, Replication

pytestmark = pytest.mark.asyncio(loop_scope="session")

T = TypeVar("T")
EMAIL = "async@example.com"


@dataclass(frozen=True, slots=True)
class LostRotation:
    server: ServerProcess
    # The pair the rotation consumed (the client let it go), and the one it answered with.
    consumed: Pair
    acknowledged: Pair

    @property
    def stub(self) -> Stub:
        return self.server.stub


async def _once_reachable(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`'s answer (or error) once the service reaches the promoted standby."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def lost() -> AsyncIterator[LostRotation]:
    with tempfile.TemporaryDirectory(prefix="authsvc-async-") as root:
        cluster = ReplicatedPostgres(Path(root), Replication.ASYNCHRONOUS)
        try:
            await cluster.start()
            async with serve_on(cluster) as server:
                await register(server.stub, EMAIL)
                consumed = pair_of(await login(server.stub, EMAIL))
                await cluster.wait_standby_replayed()
                await cluster.stop_standby()
                request = pb.RefreshRequest(refresh_token=consumed.refresh_token)
                acknowledged = pair_of(await server.stub.Refresh(request))
                await cluster.kill_primary()
                await cluster.start_standby()
                await cluster.promote()
                yield LostRotation(server, consumed, acknowledged)
        finally:
            await cluster.close()


async def test_the_acknowledged_refresh_token_is_refused_as_invalid_not_as_reuse(
    lost: LostRotation,
) -> None:
    request = pb.RefreshRequest(refresh_token=lost.acknowledged.refresh_token)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _once_reachable(lambda: lost.stub.Refresh(request))

    assert error_info(refused.value)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


async def test_the_session_stays_live_behind_the_token_the_client_let_go(
    lost: LostRotation,
) -> None:
    listed = await _once_reachable(
        lambda: lost.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(lost.acknowledged.access_token)
        )
    )
    request = pb.RefreshRequest(refresh_token=lost.consumed.refresh_token)
    revived = await lost.stub.Refresh(request)

    assert lost.consumed.session_id in {session.session_id for session in listed.sessions}
    assert revived.session_id == lost.consumed.session_id
