"""`python -m bench.session_limit` runs (its figures are docs/operations.md's), so it cannot
rot; nothing is timed here."""

from __future__ import annotations

from collections import Counter

import pytest

from authsvc.store.pool import Pool
from bench.session_limit import HELD, measure

pytestmark = pytest.mark.asyncio


async def test_the_session_limit_bench_inserts_under_each_limit_and_evicts(
    pg_dsn: str, pool: Pool
) -> None:
    results = await measure(pg_dsn, calls=9)

    assert {name: len(samples) for name, samples in results.items()} == {
        "no limit": 9,
        "evict_oldest": 9,
        "refuse (counts)": 9,
    }
    # Three rounds of three users each, one per limit, each signed in HELD + 3 times:
    # the evicting users keep HELD sessions, the others all of theirs.
    live = await pool.fetch(
        "SELECT count(*) AS n FROM sessions WHERE revoked_at IS NULL GROUP BY user_id"
    )
    assert Counter(row["n"] for row in live) == {HELD: 3, HELD + 3: 6}
