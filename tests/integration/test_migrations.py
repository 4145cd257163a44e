"""Migrations on fresh databases: order, idempotence, and replicas starting together."""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.migrate import apply_migrations, bundled_migrations
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewDatabase, make_config, pool_on

pytestmark = pytest.mark.asyncio


_SCHEMA = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type AS item
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


def _pool_on(dsn: str) -> AbstractAsyncContextManager[Pool]:
    # Roomier than the defaults: a concurrent run waits for the migration lock in one statement.
    return pool_on(dsn, db_connect_timeout="10s", db_statement_timeout="30s")


def _all_versions() -> list[int]:
    return [migration.version for migration in bundled_migrations()]


async def _snapshot(pool: Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ledger = await pool.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    schema = await pool.fetch(_SCHEMA)
    return [tuple(row) for row in ledger], [tuple(row) for row in schema]


async def test_bundled_migrations_are_numbered_one_to_n_without_gaps() -> None:
    migrations = bundled_migrations()

    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.name and m.sql.strip() for m in migrations)


async def test_apply_migrations_on_an_empty_database_applies_every_version_in_order(
    new_database: NewDatabase,
) -> None:
    async with _pool_on(await new_database()) as pool:
        applied = await apply_migrations(pool)

        ledger = await pool.fetch(
            "SELECT version, name FROM schema_migrations ORDER BY applied_at, version"
        )
        tables = await pool.fetchval(
            "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables"
            " WHERE schemaname = 'public'"
        )

    assert applied == _all_versions()
    assert [(row["version"], row["name"]) for row in ledger] == [
        (m.version, m.name) for m in bundled_migrations()
    ]
    assert set(tables) >= {"users", "sessions", "refresh_tokens", "signing_keys"}


async def test_apply_migrations_a_second_time_applies_nothing_and_changes_nothing(
    new_database: NewDatabase,
) -> None:
    async with _pool_on(await new_database()) as pool:
        await apply_migrations(pool)
        before = await _snapshot(pool)

        applied = await apply_migrations(pool)

        after = await _snapshot(pool)

    assert applied == []
    assert after == before


async def test_concurrent_apply_migrations_apply_each_version_exactly_once(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    async with _pool_on(dsn) as first, _pool_on(dsn) as second:
        results = await asyncio.gather(
            apply_migrations(first), apply_migrations(second), return_exceptions=True
        )
        recorded = await first.fetchval("SELECT count(*) FROM schema_migrations")

    assert not [r for r in results if isinstance(r, BaseException)], results
    one, other = results
    assert isinstance(one, list)
    assert isinstance(other, list)
    assert not set(one) & set(other)
    assert sorted(one + other) == _all_versions()
    assert recorded == len(_all_versions())


async def test_servers_starting_together_on_a_fresh_database_share_one_signing_key(
    new_database: NewDatabase, clock: FrozenClock
) -> None:
    dsn = await new_database()
    async with AsyncExitStack() as stack:
        servers: list[AuthServer] = []
        for _ in range(2):
            pool = await stack.enter_async_context(_pool_on(dsn))
            server = AuthServer(make_config(dsn), pool=pool, clock=clock)
            stack.push_async_callback(server.stop, None)
            servers.append(server)

        await asyncio.gather(*(server.start() for server in servers))
        async with asyncio.timeout(30):
            await asyncio.gather(*(server.wait_ready() for server in servers))

        keys = await pool.fetch("SELECT kid, retired_at FROM signing_keys")
        published = []
        for server in servers:
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            )
            response = await auth_service_pb2_grpc.AuthServiceStub(channel).GetJwks(
                pb.GetJwksRequest()
            )
            published.append([key["kid"] for key in json.loads(response.jwks_json)["keys"]])

    active = [row["kid"] for row in keys if row["retired_at"] is None]
    assert len(active) == 1
    assert len(keys) == 1
    assert published == [active, active]
