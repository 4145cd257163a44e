"""Health, reflection, shutdown and transport limits of a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authsvc.api.health import LIVENESS_SERVICE
from authsvc.app import AuthServer
from authsvc.store.bootstrap import ensure_database
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import ConfigFactory, dsn_for_database, pool_on
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, register
from tests.processes import eventually

pytestmark = pytest.mark.asyncio

SERVICE = "authsvc.v1.AuthService"
ADMIN_SERVICE = "authsvc.v1.AdminService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _statuses(channel: grpc.aio.Channel) -> list[int]:
    """Health status of the whole server ("") and of AuthService."""
    health = health_pb2_grpc.HealthStub(channel)
    statuses = []
    for service in ("", SERVICE):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        statuses.append(response.status)
    return statuses


@dataclass(frozen=True, slots=True)
class PendingServer:
    """A started server whose database does not exist yet."""

    server: AuthServer
    channel: grpc.aio.Channel
    database: str


@pytest_asyncio.fixture
async def server_without_database(
    pg_admin_dsn: str, config_factory: ConfigFactory, start_server: Callable[..., Any]
) -> AsyncIterator[PendingServer]:
    database = f"authsvc_absent_{uuid.uuid4().hex[:12]}"
    async with pool_on(dsn_for_database(pg_admin_dsn, database)) as server_pool:
        server: AuthServer = await start_server(config_factory(), server_pool=server_pool)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            yield PendingServer(server, channel, database)
        finally:
            await channel.close()
            # Stop before closing the pool its background tasks use (start_server stops it again).
            await server.stop(None)


async def test_health_is_not_serving_until_the_database_exists_then_serving(
    server_without_database: PendingServer, pg_admin_dsn: str
) -> None:
    pending = server_without_database
    before = await _statuses(pending.channel)

    await ensure_database(pg_admin_dsn, pending.database)
    async with asyncio.timeout(30):
        await pending.server.wait_ready()

    assert before == [NOT_SERVING, NOT_SERVING]
    assert await _statuses(pending.channel) == [SERVING, SERVING]


async def test_auth_call_before_the_database_exists_is_unavailable(
    server_without_database: PendingServer,
) -> None:
    stub = auth_service_pb2_grpc.AuthServiceStub(server_without_database.channel)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Login(pb.LoginRequest(email="alice@example.com", password=PASSWORD), timeout=10)

    code, reason, _ = error_info(caught.value)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert reason == "NOT_READY"


async def test_token_checks_and_jwks_before_the_keys_are_loaded_are_unavailable(
    server_without_database: PendingServer,
) -> None:
    # Not "invalid" and not an empty key set: both would be verdicts the server cannot give.
    stub = auth_service_pb2_grpc.AuthServiceStub(server_without_database.channel)
    signer = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(
        {"sub": str(uuid.uuid4()), "exp": 2_000_000_000},
        signer,
        algorithm="EdDSA",
        headers={"kid": "k", "typ": "at+jwt"},
    )

    failures = []
    for call in (
        stub.ValidateToken(pb.ValidateTokenRequest(access_token=token), timeout=10),
        stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(token), timeout=10),
        stub.GetJwks(pb.GetJwksRequest(), timeout=10),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        failures.append(error_info(caught.value)[:2])

    assert failures == [(grpc.StatusCode.UNAVAILABLE, "NOT_READY")] * 3


async def test_ready_server_reports_serving(channel: grpc.aio.Channel) -> None:
    assert await _statuses(channel) == [SERVING, SERVING]


async def test_health_list_reports_the_server_and_its_services_serving(
    channel: grpc.aio.Channel,
) -> None:
    listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest())

    assert {name: status.status for name, status in listed.statuses.items()} == {
        "": SERVING,
        SERVICE: SERVING,
        ADMIN_SERVICE: SERVING,
        LIVENESS_SERVICE: SERVING,
    }


async def test_reflection_lists_the_auth_and_admin_services(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = [
        service.name
        async for response in call
        for service in response.list_services_response.service
    ]

    assert SERVICE in names
    assert ADMIN_SERVICE in names
    assert "grpc.health.v1.Health" in names


async def test_reflection_answers_under_the_v1_name_too(channel: grpc.aio.Channel) -> None:
    # Newer tools ask grpc.reflection.v1 first; its messages are v1alpha's, field for field.
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)

    names = [
        service.name
        async for response in call
        for service in response.list_services_response.service
    ]

    assert SERVICE in names


async def test_stop_tells_health_watchers_not_serving_during_the_grace_period(
    server: AuthServer, channel: grpc.aio.Channel
) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
    )
    first = await watch.read()

    await server.stop(timedelta(seconds=1))

    second = await watch.read()
    assert first.status == SERVING
    assert second != grpc.aio.EOF
    assert second.status == NOT_SERVING


async def test_stop_does_not_wait_out_the_grace_for_an_open_health_watch(
    server: AuthServer, channel: grpc.aio.Channel
) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE)
    )
    await watch.read()

    # A bound, not a benchmark: the grace is a minute and no unary call is in
    # flight, so stop ends the stream instead of waiting the minute out.
    async with asyncio.timeout(20):
        await server.stop(timedelta(minutes=1))


async def test_stop_tells_readiness_watchers_not_serving_and_liveness_watchers_nothing(
    server: AuthServer, channel: grpc.aio.Channel
) -> None:
    # Liveness stays SERVING while the calls drain (the kubelet stops its liveness probes
    # once a pod is being deleted; other watchers must not read the drain as a hang).
    health = health_pb2_grpc.HealthStub(channel)
    readiness = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
    liveness = health.Watch(health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE), timeout=30)
    before = [(await readiness.read()).status, (await liveness.read()).status]

    # A grace long enough that the readiness watcher is told before calls are cut off; stop
    # returns as soon as it has been.
    await server.stop(timedelta(seconds=10))

    after = [(await readiness.read()).status, await _next_status_or_end(liveness)]
    assert before == [SERVING, SERVING]
    assert after == [NOT_SERVING, "ended"]


async def test_stop_does_not_wait_out_the_grace_for_an_open_liveness_watch(
    server: AuthServer, channel: grpc.aio.Channel
) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE)
    )
    await watch.read()

    # A bound, not a benchmark: the grace is a minute, and a liveness watcher is never told
    # NOT_SERVING, so stop must not wait for it to be.
    async with asyncio.timeout(20):
        await server.stop(timedelta(minutes=1))


async def _next_status_or_end(watch: Any) -> int | str:
    """The next status a Watch stream sends, or "ended" if it ends first."""
    try:
        message = await watch.read()
    except grpc.aio.AioRpcError:
        return "ended"
    return "ended" if message == grpc.aio.EOF else int(message.status)


async def test_health_check_after_stop_is_not_serving(
    server: AuthServer, channel: grpc.aio.Channel
) -> None:
    await server.stop(timedelta(seconds=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _statuses(channel)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_auth_call_after_stop_is_unavailable(server: AuthServer, stub: Stub) -> None:
    await server.stop(timedelta(seconds=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJwks(pb.GetJwksRequest(), timeout=5)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_request_id_is_echoed_in_the_trailers(stub: Stub) -> None:
    call = stub.GetJwks(pb.GetJwksRequest(), metadata=(("x-request-id", "req-42.abc:1"),))
    await call

    metadata = await call.trailing_metadata()

    assert metadata.get("x-request-id") == "req-42.abc:1"


async def test_request_id_is_echoed_beside_the_error_details_of_a_failed_call(
    stub: Stub,
) -> None:
    call = stub.Refresh(
        pb.RefreshRequest(refresh_token="x" * 43), metadata=(("x-request-id", "req-failed-1"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call

    trailers = caught.value.trailing_metadata()

    assert dict(trailers).get("x-request-id") == "req-failed-1"
    assert error_info(caught.value)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


async def test_request_id_is_generated_when_absent(stub: Stub) -> None:
    first = stub.GetJwks(pb.GetJwksRequest())
    second = stub.GetJwks(pb.GetJwksRequest())
    await first
    await second

    ids = [(await call.trailing_metadata()).get("x-request-id") for call in (first, second)]

    assert all(isinstance(value, str) and value for value in ids)
    assert ids[0] != ids[1]


async def test_malformed_request_id_is_replaced(stub: Stub) -> None:
    sent = "not a sane id " + "x" * 200
    call = stub.GetJwks(pb.GetJwksRequest(), metadata=(("x-request-id", sent),))
    await call

    echoed = (await call.trailing_metadata()).get("x-request-id")

    assert isinstance(echoed, str)
    assert echoed
    assert echoed != sent


async def test_oversized_request_is_resource_exhausted(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(stub, password="x" * (100 * 1024))

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_server_keeps_serving_after_an_oversized_request(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await login(stub, password="x" * (100 * 1024))

    registered = await register(stub)

    assert registered.session_id


async def test_failed_start_up_is_logged_retried_and_heals(
    new_database: Callable[..., Any],
    config_factory: ConfigFactory,
    start_server: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A table in the way of the first migration: not an outage, so not DATABASE_UNAVAILABLE.
    dsn = await new_database()
    async with pool_on(dsn) as admin:
        await admin.execute("CREATE TABLE users (squatter text)")
    async with pool_on(dsn) as server_pool:
        server: AuthServer = await start_server(config_factory(), server_pool=server_pool)

        async def failure_logged() -> bool:
            return any(getattr(r, "event", None) == "startup_failed" for r in caplog.records)

        await eventually(failure_logged)
        logged_before_ready = not server.ready.is_set()

        async with pool_on(dsn) as admin:
            await admin.execute("DROP TABLE users")
        async with asyncio.timeout(30):
            await server.wait_ready()

        assert logged_before_ready
        await server.stop(None)


async def test_calls_while_the_schema_is_not_migrated_are_not_ready_not_internal(
    new_database: Callable[..., Any],
    config_factory: ConfigFactory,
    start_server: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The database answers but its schema is not the service's yet (here a table in the
    # migrations' way; in life, migrations still running): a call that reached it would
    # fail on a missing table or column as INTERNAL. It must be told to come back.
    dsn = await new_database()
    async with pool_on(dsn) as admin:
        await admin.execute("CREATE TABLE users (squatter text)")
    async with pool_on(dsn) as server_pool:
        server: AuthServer = await start_server(config_factory(), server_pool=server_pool)

        async def failure_logged() -> bool:
            return any(getattr(r, "event", None) == "startup_failed" for r in caplog.records)

        await eventually(failure_logged)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            answers = []
            for call in (
                stub.Register(pb.RegisterRequest(email="a@example.com", password=PASSWORD)),
                stub.Login(pb.LoginRequest(email="a@example.com", password=PASSWORD)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                answers.append(error_info(caught.value)[:2])
            health = await _statuses(channel)

            async with pool_on(dsn) as admin:
                await admin.execute("DROP TABLE users")
            async with asyncio.timeout(30):
                await server.wait_ready()
            await stub.Register(
                pb.RegisterRequest(email="a@example.com", password=PASSWORD), timeout=10
            )
            signed_in = await stub.Login(
                pb.LoginRequest(email="a@example.com", password=PASSWORD), timeout=10
            )

        assert answers == [(grpc.StatusCode.UNAVAILABLE, "NOT_READY")] * 2
        assert health == [NOT_SERVING, NOT_SERVING]
        assert signed_in.access_token
        await server.stop(None)
