"""A database outage: UNAVAILABLE while it lasts, recovery by itself, nothing lost.

The test runs its own embedded PostgreSQL so it can stop and restart it
without disturbing the shared test database.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.app import AuthServer
from authsvc.embedded_db import DATABASE_NAME, EmbeddedPostgres, start_embedded_postgres
from authsvc.store.bootstrap import ensure_database
from authsvc.store.pool import Pool, create_pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import ConfigFactory
from tests.helpers import Stub, error_info, login, register

pytestmark = pytest.mark.asyncio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Bounds every wait here; the health probe runs every 2 s.
WAIT = 30.0


@dataclass
class OwnDatabase:
    data_dir: Path
    embedded: EmbeddedPostgres

    async def stop(self) -> None:
        await asyncio.to_thread(self.embedded.stop)

    async def start(self) -> None:
        self.embedded = await asyncio.to_thread(start_embedded_postgres, self.data_dir)


@dataclass(frozen=True, slots=True)
class Running:
    database: OwnDatabase
    server: AuthServer
    stub: Stub
    health: health_pb2_grpc.HealthStub


@pytest_asyncio.fixture
async def running(
    config_factory: ConfigFactory, start_server: Callable[..., Any]
) -> AsyncIterator[Running]:
    with tempfile.TemporaryDirectory(prefix="authsvc-outage-") as data_dir:
        embedded = await asyncio.to_thread(start_embedded_postgres, Path(data_dir))
        database = OwnDatabase(Path(data_dir), embedded)
        await ensure_database(embedded.admin_dsn(), DATABASE_NAME)
        config = config_factory(database_url=embedded.dsn(), db_connect_timeout="1s")
        pool: Pool = await create_pool(
            embedded.dsn(),
            min_size=0,
            max_size=4,
            connect_timeout=config.db_connect_timeout,
            statement_timeout=config.db_statement_timeout,
        )
        try:
            server: AuthServer = await start_server(config, server_pool=pool)
            await server.wait_ready()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield Running(
                    database,
                    server,
                    auth_service_pb2_grpc.AuthServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
            await server.stop(None)
        finally:
            await pool.close()
            await database.stop()


async def wait_for_health(health: health_pb2_grpc.HealthStub, wanted: int) -> None:
    """Follow the health Watch stream until it reports `wanted`."""
    async with asyncio.timeout(WAIT):
        stream = health.Watch(health_pb2.HealthCheckRequest(service="authsvc.v1.AuthService"))
        async for update in stream:
            if update.status == wanted:
                stream.cancel()
                return


async def test_calls_during_an_outage_are_unavailable_within_their_deadline(
    running: Running,
) -> None:
    await register(running.stub)
    await running.database.stop()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.Login(
            pb.LoginRequest(email="alice@example.com", password="correct horse battery"),
            timeout=10,
        )

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


async def test_health_is_not_serving_during_an_outage(running: Running) -> None:
    await running.database.stop()

    await wait_for_health(running.health, NOT_SERVING)


async def test_service_recovers_by_itself_and_keeps_sessions_made_before_the_outage(
    running: Running,
) -> None:
    before = await register(running.stub)
    await running.database.stop()
    await wait_for_health(running.health, NOT_SERVING)

    await running.database.start()
    await wait_for_health(running.health, SERVING)

    refreshed = await running.stub.Refresh(
        pb.RefreshRequest(refresh_token=before.refresh_token), timeout=10
    )
    assert refreshed.session_id == before.session_id
    assert (await login(running.stub)).user_id == before.user_id
