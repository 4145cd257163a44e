"""Password storage: argon2id only, and upgraded to new parameters on login."""

from __future__ import annotations

import argon2
import pytest

from authsvc.store.pool import Pool
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, login, register

pytestmark = pytest.mark.asyncio


async def _stored_hash(pool: Pool) -> str:
    password_hash: str = await pool.fetchval(
        "SELECT password_hash FROM users WHERE email = 'alice@example.com'"
    )
    return password_hash


async def _register_then_restart_with_time_cost_2(launch: Launch, pool: Pool) -> Stub:
    """Register on a server with the test parameters, then replace it with one using t=2."""
    first = await launch()
    await register(first.stub)
    await first.server.stop(None)
    assert argon2.extract_parameters(await _stored_hash(pool)).time_cost == 1
    return (await launch(argon2_time_cost="2")).stub


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
    launch: Launch, pool: Pool
) -> None:
    stub = await _register_then_restart_with_time_cost_2(launch, pool)

    await login(stub)

    stored = await _stored_hash(pool)
    assert stored.startswith("$argon2id$")
    assert argon2.extract_parameters(stored).time_cost == 2


async def test_login_succeeds_with_a_rehashed_password(launch: Launch, pool: Pool) -> None:
    stub = await _register_then_restart_with_time_cost_2(launch, pool)
    await login(stub)
    rehashed = await _stored_hash(pool)

    response = await login(stub)

    assert response.access_token
    assert await _stored_hash(pool) == rehashed
