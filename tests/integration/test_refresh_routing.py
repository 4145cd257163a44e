"""Refresh tokens route by their user (migration 0025, domain/refresh_tokens.py): the prefix
names the user whose rows Refresh reads, an edited prefix finds nothing, and a token issued
before the prefix still refreshes."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from authsvc.app import migrate_database
from authsvc.core.clock import FrozenClock
from authsvc.domain.refresh_tokens import hash_refresh_token
from authsvc.store.migrate import apply_migrations, bundled_migrations
from authsvc.store.pool import Pool
from tests.conftest import Launch, NewDatabase, pool_on
from tests.helpers import Stub, refresh, refresh_failure, register

pytestmark = pytest.mark.asyncio

_ROUTING_KEYS = 25  # migration 0025
_T0 = datetime(2030, 1, 1, tzinfo=UTC)
_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")


def prefix_of(user_id: str) -> str:
    return base64.urlsafe_b64encode(uuid.UUID(user_id).bytes).rstrip(b"=").decode("ascii")


async def rows_of(pool: Pool, user_id: str) -> list[object]:
    """Everything Refresh could change of the user: sessions, tokens, lineage."""
    user = uuid.UUID(user_id)
    return [
        [tuple(row) for row in await pool.fetch(f"SELECT * FROM {table} WHERE user_id = $1", user)]
        for table in ("sessions", "refresh_tokens", "refresh_lineage")
    ]


async def test_refresh_token_is_prefixed_by_its_users_id_and_refreshes(stub: Stub) -> None:
    first = await register(stub)

    second = await refresh(stub, first.refresh_token)

    assert first.refresh_token.split(".")[0] == prefix_of(first.user_id)
    assert second.refresh_token.split(".")[0] == prefix_of(first.user_id)
    assert (second.user_id, second.session_id) == (first.user_id, first.session_id)


async def test_token_with_another_users_prefix_is_invalid_and_leaves_their_rows_alone(
    stub: Stub, pool: Pool
) -> None:
    alice = await register(stub, "alice@example.com")
    bob = await register(stub, "bob@example.com")
    secret = alice.refresh_token.split(".")[1]
    bob_before = await rows_of(pool, bob.user_id)

    failure = await refresh_failure(stub, f"{prefix_of(bob.user_id)}.{secret}")

    assert failure == _INVALID
    assert await rows_of(pool, bob.user_id) == bob_before
    # Alice's token is not spent by the attempt either.
    assert (await refresh(stub, alice.refresh_token)).session_id == alice.session_id


@pytest.mark.parametrize(
    "edit",
    [
        lambda prefix: prefix[:-1],
        lambda prefix: prefix + "A",
        lambda prefix: prefix[:-1] + "B",
        lambda prefix: prefix[:-1] + "=",
        lambda prefix: "",
    ],
    ids=["short", "long", "not-an-ids-spelling", "padding", "empty"],
)
async def test_token_with_a_malformed_prefix_is_invalid(
    stub: Stub, edit: Callable[[str], str]
) -> None:
    signed_in = await register(stub)
    prefix, secret = signed_in.refresh_token.split(".")

    failure = await refresh_failure(stub, f"{edit(prefix)}.{secret}")

    assert failure == _INVALID
    assert (await refresh(stub, signed_in.refresh_token)).session_id == signed_in.session_id


async def test_token_issued_before_the_prefix_still_refreshes_into_a_prefixed_one(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database()
    clock = FrozenClock(_T0)
    user_id, session_id = uuid.uuid4(), uuid.uuid4()
    legacy = secrets.token_urlsafe(32)  # a refresh token as releases before 0025 made them
    async with pool_on(dsn, db_statement_timeout="30s") as pool:
        await apply_migrations(pool, [m for m in bundled_migrations() if m.version < _ROUTING_KEYS])
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO users (id, email, display_name, password_hash, created_at,"
                " updated_at) VALUES ($1, 'legacy@example.com', '', 'unused', $2, $2)",
                user_id,
                _T0 - timedelta(days=1),
            )
            await conn.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_active_at,"
                " idle_expires_at, expires_at, remember_me, user_agent, ip_address,"
                " device_type, browser, os, device_name)"
                " VALUES ($1, $2, $3, $3, $4, $5, false, '', '', 'other', '', '', '')",
                session_id,
                user_id,
                _T0 - timedelta(minutes=5),
                _T0 + timedelta(hours=1),
                _T0 + timedelta(days=1),
            )
            await conn.execute(
                "INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                uuid.uuid4(),
                session_id,
                hash_refresh_token(legacy),
                _T0 - timedelta(minutes=5),
                _T0 + timedelta(hours=1),
            )
        await migrate_database(pool, clock)
        server = await launch(server_pool=pool, server_clock=clock)

        refreshed = await refresh(server.stub, legacy)
        again = await refresh(server.stub, refreshed.refresh_token)
        await server.server.stop(None)

    assert (refreshed.user_id, refreshed.session_id) == (str(user_id), str(session_id))
    assert refreshed.refresh_token.split(".")[0] == prefix_of(str(user_id))
    assert again.session_id == str(session_id)


async def test_token_a_previous_release_stores_during_the_upgrade_refreshes(
    stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    legacy = secrets.token_urlsafe(32)
    # A replica of the release before 0025 inserts a token as it always did: no user_id.
    await pool.execute(
        "INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        uuid.uuid4(),
        uuid.UUID(signed_in.session_id),
        hash_refresh_token(legacy),
        clock.now(),
        clock.now() + timedelta(minutes=30),
    )

    refreshed = await refresh(stub, legacy)

    assert (refreshed.user_id, refreshed.session_id) == (signed_in.user_id, signed_in.session_id)
    assert refreshed.refresh_token.split(".")[0] == prefix_of(signed_in.user_id)
