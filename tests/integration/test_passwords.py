"""Password storage: argon2id only, and upgraded to new parameters on login."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import argon2
import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.config import Config
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2_grpc
from tests.helpers import PASSWORD, Stub, login, register

pytestmark = pytest.mark.asyncio

ConfigFactory = Callable[..., Config]
StartServer = Callable[..., Any]


@asynccontextmanager
async def _stub_for(server: AuthServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


async def _ready_server(start_server: StartServer, config: Config) -> AuthServer:
    server: AuthServer = await start_server(config)
    await server.wait_ready()
    return server


async def _stored_hash(pool: Pool) -> str:
    password_hash: str = await pool.fetchval(
        "SELECT password_hash FROM users WHERE email = 'alice@example.com'"
    )
    return password_hash


async def _register_then_restart_with_time_cost_2(
    start_server: StartServer, config_factory: ConfigFactory, pool: Pool
) -> AuthServer:
    """Register on a server with the test parameters, then replace it with one using t=2."""
    server_a = await _ready_server(start_server, config_factory())
    async with _stub_for(server_a) as stub:
        await register(stub)
    await server_a.stop(None)
    assert argon2.extract_parameters(await _stored_hash(pool)).time_cost == 1
    return await _ready_server(start_server, config_factory(argon2_time_cost="2"))


async def test_password_is_stored_as_an_argon2id_hash(stub: Stub, pool: Pool) -> None:
    await register(stub)

    stored = await _stored_hash(pool)

    assert stored.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(stored, PASSWORD)


async def test_password_is_in_no_column_of_users(stub: Stub, pool: Pool) -> None:
    await register(stub)

    row = await pool.fetchrow("SELECT * FROM users")

    assert row is not None
    for column, value in row.items():
        assert PASSWORD not in str(value), column


async def test_login_rehashes_password_when_argon2_parameters_change(
    start_server: StartServer, config_factory: ConfigFactory, pool: Pool
) -> None:
    server_b = await _register_then_restart_with_time_cost_2(start_server, config_factory, pool)

    async with _stub_for(server_b) as stub:
        await login(stub)

    stored = await _stored_hash(pool)
    assert stored.startswith("$argon2id$")
    assert argon2.extract_parameters(stored).time_cost == 2


async def test_login_succeeds_with_a_rehashed_password(
    start_server: StartServer, config_factory: ConfigFactory, pool: Pool
) -> None:
    server_b = await _register_then_restart_with_time_cost_2(start_server, config_factory, pool)
    async with _stub_for(server_b) as stub:
        await login(stub)
        rehashed = await _stored_hash(pool)

        response = await login(stub)

    assert response.access_token
    assert await _stored_hash(pool) == rehashed
