"""Idle connections, the open-files limit, and what a server says when it runs out.

Each test starts a real `authsvc serve` process with its own RLIMIT_NOFILE and holds
idle HTTP/2 connections to it (the preface, then nothing), as a client that connects
and goes quiet does. The probes that must still answer go over a new connection,
because a connection opened before the descriptors ran out would hide the problem.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewDatabase
from tests.helpers import register
from tests.processes import (
    WAIT,
    IdleConnections,
    ServerProcess,
    eventually,
    open_file_limits,
    server_group,
)

pytestmark = pytest.mark.asyncio

# The soft limit the servers start with: a quarter of the usual 1,024, so the
# tests need few connections to reach it.
LOW = 256
# More idle connections than LOW descriptors can hold.
IDLE_CONNECTIONS = 400
GOAWAY = 0x7
# A bound on one probe call, not a timing assertion.
PROBE_TIMEOUT = 10.0
# A new TCP connection, rather than the one the server's own channel to the same
# target already holds (channels in one process share connections by default).
_OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@pytest_asyncio.fixture
async def idle() -> AsyncIterator[Callable[[ServerProcess, int], Awaitable[IdleConnections]]]:
    """Opens `count` idle connections to a server; all are closed after the test."""
    opened: list[IdleConnections] = []

    async def open_idle(server: ServerProcess, count: int) -> IdleConnections:
        connections = IdleConnections(server.port)
        opened.append(connections)
        await connections.open(count)
        return connections

    yield open_idle
    for connections in opened:
        connections.close()


OpenIdle = Callable[[ServerProcess, int], Awaitable[IdleConnections]]


def _log_events(server: ServerProcess) -> list[dict[str, object]]:
    events = []
    for line in server.stderr_tail.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def test_idle_connection_is_closed_with_goaway_after_the_idle_timeout(
    new_database: NewDatabase, idle: OpenIdle
) -> None:
    async with server_group() as servers:
        server = await servers.start(await new_database(), AUTHSVC_CONNECTION_IDLE_TIMEOUT="1s")
        connections = await idle(server, 1)

        frames = await connections.frames_until_closed()

    assert GOAWAY in frames


async def test_a_connection_holding_a_half_sent_call_is_closed_at_its_maximum_age(
    new_database: NewDatabase,
) -> None:
    # A call whose request never finishes arriving keeps its connection from ever being
    # idle: the maximum age (and its grace) is what ends it.
    async with server_group() as servers:
        server = await servers.start_ready(
            await new_database(),
            AUTHSVC_CONNECTION_IDLE_TIMEOUT="1h",
            AUTHSVC_CONNECTION_MAX_AGE="2s",
            AUTHSVC_CONNECTION_MAX_AGE_GRACE="1s",
        )
        never_sent = asyncio.Event()

        async def request_that_never_ends() -> AsyncIterator[bytes]:
            await never_sent.wait()
            yield b""

        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=_OWN_CONNECTION
        ) as channel:
            login: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
                "/authsvc.v1.AuthService/Login"
            )
            half_sent = login(request_that_never_ends(), timeout=WAIT)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await half_sent

    # Closed by the server (UNAVAILABLE), not ended by the call's own deadline.
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_soft_open_files_limit_is_raised_to_the_hard_limit_at_start(
    new_database: NewDatabase,
) -> None:
    async with server_group(open_files=(LOW, 4096)) as servers:
        server = await servers.start(await new_database())

        limits = open_file_limits(server.process.pid)

    assert limits == (4096, 4096)


async def test_health_and_validate_token_answer_new_connections_past_the_old_soft_limit(
    new_database: NewDatabase, idle: OpenIdle
) -> None:
    async with server_group(open_files=(LOW, 4096)) as servers:
        server = await servers.start_ready(await new_database())
        token = (await register(server.stub)).access_token
        await idle(server, IDLE_CONNECTIONS)

        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=_OWN_CONNECTION
        ) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT
            )
            validated = await auth_service_pb2_grpc.AuthServiceStub(channel).ValidateToken(
                pb.ValidateTokenRequest(access_token=token), timeout=PROBE_TIMEOUT
            )

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert validated.active


async def test_health_answers_once_idle_connections_at_the_hard_limit_are_closed(
    new_database: NewDatabase, idle: OpenIdle
) -> None:
    # The hard limit is the soft one: nothing to raise, so only closing idle
    # connections frees descriptors for the new one, queued in the listen backlog.
    async with server_group(open_files=(LOW, LOW)) as servers:
        server = await servers.start_ready(
            await new_database(), AUTHSVC_CONNECTION_IDLE_TIMEOUT="2s"
        )
        await idle(server, IDLE_CONNECTIONS)

        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=_OWN_CONNECTION
        ) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=WAIT, wait_for_ready=True
            )

    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_running_out_of_open_files_logs_that_connections_are_refused(
    new_database: NewDatabase, idle: OpenIdle
) -> None:
    async with server_group(open_files=(LOW, LOW)) as servers:
        server = await servers.start_ready(await new_database())
        await idle(server, IDLE_CONNECTIONS)

        async def exhaustion_logged() -> bool:
            return any(
                event.get("event") == "open_files_exhausted" and event.get("level") == "WARNING"
                for event in _log_events(server)
            )

        await eventually(exhaustion_logged)
