"""Which database failures the store reports as the database being unavailable (a retry
may succeed: UNAVAILABLE) and which it lets through as bugs (INTERNAL)."""

from __future__ import annotations

import asyncpg
import pytest

from authsvc.core.errors import DatabaseUnavailable
from authsvc.store.errors import translate_errors

pytestmark = pytest.mark.asyncio


def server_error(sqlstate: str, message: str) -> asyncpg.PostgresError:
    """The error asyncpg raises for a server's ErrorResponse with this SQLSTATE."""
    error: asyncpg.PostgresError = asyncpg.PostgresError.new(
        {"C": sqlstate, "M": message, "S": "ERROR"}
    )
    return error


async def test_a_citus_execution_that_lost_its_intermediate_result_is_unavailable() -> None:
    # What a statement can meet while a shard move blocks writes (a rebalance): the whole
    # distributed transaction rolled back, nothing written.
    lost = server_error("CIINF", "Query could not find the intermediate result file")

    with pytest.raises(DatabaseUnavailable) as caught:
        async with translate_errors():
            raise lost

    assert "intermediate result" in caught.value.detail


async def test_a_wrong_query_is_not_unavailable() -> None:
    wrong = server_error("42P01", 'relation "sessoins" does not exist')

    with pytest.raises(asyncpg.UndefinedTableError):
        async with translate_errors():
            raise wrong
