"""The outbox's statements on a loaded outbox: the worker's claim, the operator's listing and
the sweeper's batch each read about what they return, not the table, through migration
0023's indexes. Plans and row counts only; nothing is timed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from authsvc.store import sweep as sweep_sql
from authsvc.store import webhooks as webhook_sql
from authsvc.store.pool import Pool

pytestmark = pytest.mark.asyncio

DELIVERED = 100_000
PENDING = 200
FAILED = 200
NOW = datetime(2030, 1, 1, tzinfo=UTC)
BATCH = 8
BOUNDED = 1000
ENDPOINT = "https://hooks.example.com/authsvc"
# A loaded table takes longer to fill than the pool's statement timeout allows.
LOAD_TIMEOUT = 300


async def load_outbox(pool: Pool) -> None:
    """A week of delivered events, one every 6 s, and some pending and failed ones."""
    await pool.execute(
        """
        INSERT INTO webhook_deliveries (id, endpoint, event_type, occurred_at, user_id, data,
            state, attempts, next_attempt_at, last_attempt_at, last_http_status)
        SELECT gen_random_uuid(), $1, 'session.created',
               $2::timestamptz - make_interval(secs => n * 6), gen_random_uuid(), '{}',
               CASE WHEN n <= $4 THEN 'pending' WHEN n <= $4 + $5 THEN 'failed'
                    ELSE 'delivered' END,
               1, $2::timestamptz - make_interval(secs => n * 6) + interval '5 seconds',
               $2::timestamptz - make_interval(secs => n * 6), 204
        FROM generate_series(1, $3) n
        """,
        ENDPOINT,
        NOW,
        DELIVERED + PENDING + FAILED,
        PENDING,
        FAILED,
        timeout=LOAD_TIMEOUT,
    )
    await pool.execute("ANALYZE webhook_deliveries", timeout=LOAD_TIMEOUT)


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


async def rows_read(pool: Pool, statement: str, *args: object) -> tuple[int, list[str]]:
    """How many webhook_deliveries rows the statement read (returned or filtered out), and
    how; run and rolled back, so a write changes nothing."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", *args)
        finally:
            await transaction.rollback()
    reads = [
        node
        for node in _nodes(json.loads(explained)[0]["Plan"])
        if node.get("Relation Name") == "webhook_deliveries" and "Scan" in node["Node Type"]
    ]
    read = sum(
        int(node["Actual Rows"] * node["Actual Loops"])
        + int(node.get("Rows Removed by Filter", 0))
        + int(node.get("Rows Removed by Index Recheck", 0))
        for node in reads
        if not node["Node Type"].startswith("Bitmap Index")
    )
    return read, [node["Node Type"] for node in reads]


async def test_the_workers_claim_reads_a_batch_not_the_outbox(pool: Pool) -> None:
    await load_outbox(pool)

    read, scans = await rows_read(
        pool, webhook_sql._CLAIM, NOW, BATCH, NOW + timedelta(seconds=15), [ENDPOINT]
    )

    assert read <= BOUNDED, (read, scans)
    assert "Seq Scan" not in scans


@pytest.mark.parametrize("state", ["failed", "pending", "delivered"])
async def test_a_listing_page_reads_about_a_page(pool: Pool, state: str) -> None:
    await load_outbox(pool)

    read, scans = await rows_read(pool, webhook_sql._LIST_FIRST_PAGE, state, 51)

    assert read <= BOUNDED, (read, scans)
    assert "Seq Scan" not in scans


async def test_the_sweepers_batch_reads_about_a_batch(pool: Pool) -> None:
    await load_outbox(pool)

    read, scans = await rows_read(
        pool, sweep_sql._DELETE_SETTLED_WEBHOOK_DELIVERIES, NOW - timedelta(days=3), 500
    )

    assert read <= BOUNDED, (read, scans)
    assert "Seq Scan" not in scans
