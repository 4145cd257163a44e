"""Migration 0026 on a database with accounts: every account still signs in, one still queued
by migration 0012 included, and no email registers a second account."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import argon2
import grpc
import pytest
import pytest_asyncio

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.migrate import apply_migrations, bundled_migrations
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewDatabase, make_config, pool_on
from tests.helpers import PASSWORD, Stub, error_info, login

pytestmark = pytest.mark.asyncio

_CANONICAL_EMAILS = 12
_USER_EMAILS = 26
_T0 = datetime(2024, 1, 1, tzinfo=UTC)
# The test settings' argon2 cost (tests/conftest.py), so signing in rehashes nothing.
_HASHER = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# (email as stored before 0026, the canonical form a user types), the second still queued.
ACCOUNTS = [
    ("bob@example.com", "bob@example.com"),
    ("Carol@Example.COM", "carol@example.com"),
]


@pytest_asyncio.fixture
async def upgraded(new_database: NewDatabase) -> AsyncIterator[tuple[Stub, Pool]]:
    """A server started on a database that held ACCOUNTS at migration 0025, with
    Carol's email queued by 0012 and not yet rewritten: `serve` applies 0026 and then
    rewrites the queue. Register tells a taken email (EMAIL_TAKEN) here."""
    dsn = await new_database()
    async with pool_on(dsn, db_statement_timeout="30s") as pool:
        await apply_migrations(
            pool, [m for m in bundled_migrations() if m.version < _CANONICAL_EMAILS]
        )
        for n, (stored, _) in enumerate(ACCOUNTS):
            await pool.execute(
                "INSERT INTO users (id, email, password_hash, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $4)",
                uuid.uuid4(),
                stored,
                _HASHER.hash(PASSWORD),
                _T0 + timedelta(hours=n),
            )
        await apply_migrations(pool, [m for m in bundled_migrations() if m.version < _USER_EMAILS])
        queued = await pool.fetchval(
            "SELECT u.email FROM email_canonicalization_queue q JOIN users u ON u.id = q.user_id"
        )
        assert queued == ACCOUNTS[1][0]

        config = make_config(dsn, registration_reveals_accounts="true")
        server = AuthServer(config, pool=pool, clock=FrozenClock(_T0 + timedelta(days=30)))
        await server.start()
        try:
            await server.wait_ready()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield auth_service_pb2_grpc.AuthServiceStub(channel), pool
        finally:
            await server.stop(None)


async def test_every_account_signs_in_by_its_canonical_email_after_the_upgrade(
    upgraded: tuple[Stub, Pool],
) -> None:
    stub, pool = upgraded

    signed_in = [await login(stub, email=typed) for _, typed in ACCOUNTS]

    owners = {row["email"]: row["id"] for row in await pool.fetch("SELECT email, id FROM users")}
    assert [uuid.UUID(s.user_id) for s in signed_in] == [owners[typed] for _, typed in ACCOUNTS]


async def test_no_email_registers_a_second_account_after_the_upgrade(
    upgraded: tuple[Stub, Pool],
) -> None:
    stub, pool = upgraded

    refusals = []
    for stored, typed in ACCOUNTS:
        for email in (stored, typed):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Register(
                    pb.RegisterRequest(email=email, password="another passphrase 42")
                )
            refusals.append(error_info(caught.value)[:2])

    assert refusals == [(grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")] * 4
    assert await pool.fetchval("SELECT count(*) FROM users") == len(ACCOUNTS)
