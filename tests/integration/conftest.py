"""Integration tests share one migrated database and start each test empty."""

from __future__ import annotations

import pytest_asyncio

from authsvc.store.pool import Pool
from tests.conftest import empty_tables


@pytest_asyncio.fixture(autouse=True)
async def clean_db(pool: Pool) -> None:
    """Empty tables for each test; the migrations stay applied."""
    await empty_tables(pool)
