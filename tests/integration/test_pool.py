"""The pool returns connections without asyncpg's reset query unless they listened, so
nothing may leave session state on one: no advisory lock, no LISTEN goes back to the pool."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from authsvc.store.pool import Pool, session_advisory_lock, try_session_advisory_lock
from tests.conftest import pool_on

pytestmark = pytest.mark.asyncio

KEY = 0x61757468_7E57  # a key no part of the service uses

CHANNEL = "authsvc_test_channel"

_HELD = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1"


async def held_locks(pool: Pool) -> int:
    return int(await pool.fetchval(_HELD, KEY & 0xFFFFFFFF))


async def test_lock_is_released_when_the_block_ends(pool: Pool) -> None:
    async with session_advisory_lock(pool, KEY):
        during = await held_locks(pool)

    assert (during, await held_locks(pool)) == (1, 0)


async def test_lock_is_released_when_the_block_raises(pool: Pool) -> None:
    with pytest.raises(LookupError):
        async with session_advisory_lock(pool, KEY):
            raise LookupError

    assert await held_locks(pool) == 0


async def test_lock_never_goes_back_to_the_pool_when_its_holder_is_cancelled(
    pg_dsn: str,
) -> None:
    # One connection: whatever the cancelled holder leaves behind, the next
    # checkout gets.
    async with pool_on(pg_dsn, min_size=1, max_size=1) as single:
        entered = asyncio.Event()

        async def holder() -> None:
            async with session_advisory_lock(single, KEY):
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(holder())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async with try_session_advisory_lock(single, KEY) as conn:
            assert conn is not None
        assert await held_locks(single) == 0


async def test_try_lock_yields_none_while_another_session_holds_it(pool: Pool) -> None:
    async with session_advisory_lock(pool, KEY), try_session_advisory_lock(pool, KEY) as second:
        assert second is None

    async with try_session_advisory_lock(pool, KEY) as third:
        assert third is not None


async def test_a_released_connection_carries_no_transaction(pg_dsn: str) -> None:
    async with pool_on(pg_dsn, min_size=1, max_size=1) as single:
        async with single.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("CREATE TEMP TABLE left_open (x int)")

        async with single.acquire() as conn:
            in_transaction = conn.is_in_transaction()
            left_open = await conn.fetchval("SELECT to_regclass('pg_temp.left_open')")

    assert (in_transaction, left_open) == (False, None)


def _ignore(*_: object) -> None:
    pass


async def test_a_listener_left_on_a_pooled_connection_does_not_reach_the_next_borrower(
    pg_dsn: str,
) -> None:
    async with pool_on(pg_dsn, min_size=1, max_size=1) as single:
        # asyncpg warns about the forgotten listener; the pool must clean up after it.
        with pytest.warns(asyncpg.InterfaceWarning, match="listener"):
            async with single.acquire() as conn:
                await conn.add_listener(CHANNEL, _ignore)

        async with single.acquire() as conn:
            listening = await conn.fetch("SELECT pg_listening_channels()")

    assert listening == []


async def test_a_connection_that_never_listened_goes_back_without_a_round_trip(
    pg_dsn: str,
) -> None:
    # The measured win of skipping asyncpg's reset query; fails if asyncpg stops asking
    # the connection for its reset query.
    sent: list[str] = []

    def log(logged: asyncpg.connection.LoggedQuery) -> None:
        sent.append(logged.query)

    async with pool_on(pg_dsn, min_size=1, max_size=1) as single, single.acquire() as conn:
        conn.add_query_logger(log)
        await conn.fetchval("SELECT 1")
    # Released (and the pool closed): asyncpg has run whatever it runs on release.

    assert sent == ["SELECT 1"]
