"""RevokeSessions' batch statement on 100,000 loaded, analysed sessions: each batch reads
about a batch of rows, whichever filter, never the table, so the whole run reads the
table about once (issue 14). Plans and row counts only; nothing is timed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from authsvc.core.clock import FrozenClock
from authsvc.core.models import DeviceType, UserId
from authsvc.core.session_filters import SessionFilter
from authsvc.domain.bulk_revocation import BATCH_SIZE
from authsvc.store import bulk_revocation as bulk_sql
from authsvc.store.pool import Pool
from tests.integration.test_bulk_revocation_load import LOAD_TIMEOUT, SESSIONS, load_sessions
from tests.query_plans import plan_nodes

pytestmark = pytest.mark.asyncio

# The batch's rows, the rows its filter skips and the UPDATE's own reads of them.
BOUNDED = 4 * BATCH_SIZE
LEAKED_KID = "leaked-key"
# Half-way through the id space: a later batch starts at its key, not at the first id.
MIDDLE = uuid.UUID("80000000-0000-4000-8000-000000000000")


async def mark_leaked_key(pool: Pool) -> None:
    """1 session in 50 last signed by LEAKED_KID, the others by a current key."""
    await pool.execute(
        # By a hash of the id, not random(): Citus refuses a VOLATILE function in an UPDATE.
        "UPDATE sessions SET signing_key_id"
        " = CASE WHEN abs(hashtext(id::text)) % 50 = 0 THEN $1 ELSE 'current' END",
        LEAKED_KID,
        timeout=LOAD_TIMEOUT,
    )
    await pool.execute("ANALYZE sessions", timeout=LOAD_TIMEOUT)


def _session_reads(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for node in plan_nodes(plan):
        if node.get("Relation Name") == "sessions" or node["Node Type"].startswith("Bitmap Index"):
            yield node


async def batch_reads(
    pool: Pool,
    which: SessionFilter,
    clock: FrozenClock,
    after: uuid.UUID | None,
    *,
    keep: str | None = None,
) -> tuple[int, list[str], set[str]]:
    """How many sessions rows one batch read (returned or filtered out), its scan node
    types and the indexes it used, as the run runs it (custom plans): its pick of keys,
    then its ending of them. Rolled back, unless `keep` names the revoke reason to commit
    the batch with."""
    now = clock.now()
    arguments = bulk_sql.filter_arguments(which, now=now, started=now)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(bulk_sql._CUSTOM_PLANS)
            pick = (*arguments, after, BATCH_SIZE)
            picked = await conn.fetch(bulk_sql._PICK, *pick)
            explained = [
                await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {bulk_sql._PICK}", *pick),
                await conn.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {bulk_sql._END_PICKED}",
                    *arguments,
                    keep or "plan test",
                    "oncall",
                    [row["user_id"] for row in picked],
                    [row["id"] for row in picked],
                ),
            ]
        except BaseException:
            await transaction.rollback()
            raise
        if keep is None:
            await transaction.rollback()
        else:
            await transaction.commit()
    nodes = [node for plan in explained for node in _session_reads(json.loads(plan)[0]["Plan"])]
    read = sum(
        int(node["Actual Rows"] * node["Actual Loops"])
        + int(node.get("Rows Removed by Filter", 0))
        + int(node.get("Rows Removed by Index Recheck", 0))
        for node in nodes
        if not node["Node Type"].startswith("Bitmap Index")
    )
    indexes = {node["Index Name"] for node in nodes if "Index Name" in node}
    return read, [node["Node Type"] for node in nodes], indexes


async def run_reads(pool: Pool, which: SessionFilter, clock: FrozenClock) -> tuple[int, int]:
    """(rows read, sessions ended) by a whole run of committed batches, as the domain runs
    them: each after the last one's highest id, until one comes back short."""
    read = ended = 0
    after: uuid.UUID | None = None
    for batch in range(1000):
        reason = f"plan test batch {batch}"
        rows, _, _ = await batch_reads(pool, which, clock, after, keep=reason)
        row = await pool.fetchrow(
            "SELECT count(*), (array_agg(id ORDER BY id DESC))[1] FROM sessions"
            " WHERE revoke_reason = $1",
            reason,
        )
        assert row is not None
        count, last = row
        read, ended, after = read + rows, ended + count, last
        if count < BATCH_SIZE:
            break
    return read, ended


async def _some_users(pool: Pool, count: int) -> tuple[UserId, ...]:
    rows = await pool.fetch("SELECT id FROM users ORDER BY id LIMIT $1", count)
    return tuple(UserId(row["id"]) for row in rows)


_FILTERS = {
    "a leaked signing key": SessionFilter(signing_key_id=LEAKED_KID),
    "an address range (every session)": SessionFilter(ip_cidr="10.0.0.0/8"),
    "a user agent (every session)": SessionFilter(user_agent_contains="loadbot"),
    "a device type (every session)": SessionFilter(device_types=(DeviceType.BOT,)),
}


@pytest.mark.parametrize("name", list(_FILTERS))
async def test_a_batch_reads_about_a_batch_of_rows(
    pool: Pool, clock: FrozenClock, name: str
) -> None:
    await load_sessions(pool, clock)
    await mark_leaked_key(pool)
    which = _FILTERS[name]

    first = await batch_reads(pool, which, clock, None)
    later = await batch_reads(pool, which, clock, MIDDLE)

    for read, scans, indexes in (first, later):
        assert read <= BOUNDED, (read, scans)
        assert "Seq Scan" not in scans, scans
        if which.signing_key_id:
            assert "sessions_live_signing_key_idx" in indexes, indexes


async def test_a_batch_of_a_few_users_reads_their_sessions_through_their_index(
    pool: Pool, clock: FrozenClock
) -> None:
    await load_sessions(pool, clock)
    users = await _some_users(pool, 10)  # 100 sessions each

    read, scans, indexes = await batch_reads(pool, SessionFilter(user_ids=users), clock, None)

    assert read <= BOUNDED, (read, scans)
    # Either index that leads with user_id: the primary key has since migration 0025.
    assert indexes & {"sessions_user_live_idx", "sessions_pkey"}, indexes


async def test_a_run_over_a_sparse_filter_reads_the_table_about_once(
    pool: Pool, clock: FrozenClock
) -> None:
    """No index serves a time window (sessions are created one a second in the load, so
    the last hour is 3,600 of them): each batch walks the primary key from where the last
    stopped, and the run as a whole reads each row about once. Near the end of the id
    space the planner may read the rest of the range in one bitmap scan instead of
    walking it (1.3 times the table in all, measured): hence the factor 2."""
    await load_sessions(pool, clock)
    recent = SessionFilter(created_after=clock.now() - timedelta(hours=1))

    read, ended = await run_reads(pool, recent, clock)

    print(f"\nA run ending {ended} of {SESSIONS} sessions read {read} rows")
    assert ended == 3600
    assert read <= 2 * SESSIONS, read
