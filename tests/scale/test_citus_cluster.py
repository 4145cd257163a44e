"""The Citus harness itself: a database made through it has Citus and every worker, and the
EXPLAIN helper (citus_router.py) tells a router statement from one that spans shards, on a toy
co-located schema made here (accounts, their items, a coordinator-local journal)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from tests.scale.citus_cluster import CitusCluster
from tests.scale.citus_router import explain

pytestmark = pytest.mark.asyncio

_SCHEMA = [
    "CREATE TABLE accounts (id uuid PRIMARY KEY, name text NOT NULL)",
    "CREATE TABLE items (account_id uuid NOT NULL, id uuid NOT NULL, n int NOT NULL DEFAULT 0,"
    " PRIMARY KEY (account_id, id))",
    "SELECT create_distributed_table('accounts', 'id')",
    "SELECT create_distributed_table('items', 'account_id', colocate_with => 'accounts')",
    # Plain: stays on the coordinator.
    "CREATE TABLE journal (id bigserial PRIMARY KEY, account_id uuid NOT NULL)",
]
# A router statement's CTE, then the coordinator's own insert from its result.
_BUMP_AND_JOURNAL = """
WITH bumped AS (UPDATE items SET n = n + 1 WHERE {where} RETURNING account_id)
INSERT INTO journal (account_id) SELECT account_id FROM bumped
"""


@dataclass(frozen=True, slots=True)
class Toy:
    cluster: CitusCluster
    conn: asyncpg.Connection
    shard_count: int


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def toy() -> AsyncIterator[Toy]:
    with tempfile.TemporaryDirectory(prefix="authsvc-citus-") as root:
        cluster = CitusCluster(Path(root))
        try:
            await cluster.start()
            conn = await asyncpg.connect(await cluster.create_database("toy"))
            try:
                for statement in _SCHEMA:
                    await conn.execute(statement)
                shard_count = await conn.fetchval(
                    "SELECT shard_count FROM citus_tables WHERE table_name = 'items'::regclass"
                )
                yield Toy(cluster, conn, shard_count)
            finally:
                await conn.close()
        finally:
            await cluster.stop()


def _workers(cluster: CitusCluster) -> set[str]:
    return {f"127.0.0.1:{worker.port}" for worker in cluster.workers}


async def _registered(conn: asyncpg.Connection) -> dict[int, int]:
    """Port -> group of every active primary node in this database's metadata."""
    rows = await conn.fetch(
        "SELECT nodeport, groupid FROM pg_dist_node WHERE isactive AND noderole = 'primary'"
    )
    return {row["nodeport"]: row["groupid"] for row in rows}


async def test_a_database_made_through_the_harness_has_the_coordinator_and_both_workers(
    toy: Toy,
) -> None:
    registered = await _registered(toy.conn)

    assert registered.pop(toy.cluster.coordinator.port) == 0  # group 0: the coordinator
    assert set(registered) == {worker.port for worker in toy.cluster.workers}
    assert len(set(registered.values())) == 2


async def test_a_distributed_tables_shards_are_on_both_workers(toy: Toy) -> None:
    placed = await toy.conn.fetch(
        "SELECT DISTINCT nodeport FROM citus_shards WHERE table_name = 'items'::regclass"
    )

    assert {row["nodeport"] for row in placed} == {w.port for w in toy.cluster.workers}


async def test_a_query_filtered_by_the_distribution_column_is_single_shard(toy: Toy) -> None:
    explained = await explain(toy.conn, "SELECT * FROM items WHERE account_id = $1", uuid.uuid4())

    assert explained.is_single_shard, explained
    assert [scan.task_count for scan in explained.scans] == [1]
    assert len(explained.workers) == 1


async def test_a_query_not_filtered_by_the_distribution_column_spans_every_shard(
    toy: Toy,
) -> None:
    explained = await explain(toy.conn, "SELECT * FROM items WHERE id = $1", uuid.uuid4())

    assert not explained.is_single_shard, explained
    assert [scan.task_count for scan in explained.scans] == [toy.shard_count]
    assert explained.workers == _workers(toy.cluster)


async def test_a_join_of_co_located_tables_on_one_account_is_single_shard(toy: Toy) -> None:
    explained = await explain(
        toy.conn,
        "SELECT a.name, i.n FROM accounts a JOIN items i ON i.account_id = a.id"
        " WHERE a.id = $1 AND i.id = $2",
        uuid.uuid4(),
        uuid.uuid4(),
    )

    assert explained.is_single_shard, explained


async def test_a_router_subplan_then_a_coordinator_insert_is_single_shard(toy: Toy) -> None:
    sql = _BUMP_AND_JOURNAL.format(where="account_id = $1")

    explained = await explain(toy.conn, sql, uuid.uuid4())

    assert explained.is_single_shard, explained
    assert not explained.multi_shard_subplans
    assert explained.coordinator_tables == {"journal"}


async def test_a_subplan_spanning_shards_makes_the_statement_multi_shard(toy: Toy) -> None:
    sql = _BUMP_AND_JOURNAL.format(where="n = $1")

    explained = await explain(toy.conn, sql, 0)

    assert not explained.is_single_shard, explained
    assert [scan.task_count for scan in explained.multi_shard_subplans] == [toy.shard_count]


async def test_an_insert_select_through_the_coordinator_is_explained_but_not_single_shard(
    toy: Toy,
) -> None:
    """Citus cannot EXPLAIN this one with bound parameters (citusdata/citus#4075); the
    helper explains it with the values inlined. Its SELECT is pruned by the value to one
    shard, but where its rows go is decided as it runs: not a router statement."""
    account = uuid.uuid4()

    explained = await explain(
        toy.conn,
        "INSERT INTO items (account_id, id) SELECT $1, $2 FROM accounts WHERE id = $1",
        account,
        uuid.uuid4(),
    )

    insert, select = explained.scans
    assert not explained.is_single_shard, explained
    assert (insert.provider, insert.task_count) == (
        "Citus INSERT ... SELECT (pull to coordinator)",
        None,
    )
    assert select.is_subplan
    assert select.is_single_shard


async def test_a_worker_added_later_is_registered_in_every_database() -> None:
    with tempfile.TemporaryDirectory(prefix="authsvc-citus-") as root:
        cluster = CitusCluster(Path(root))
        try:
            await cluster.start()
            before = await cluster.create_database("before")

            added = await cluster.add_worker()

            after = await cluster.create_database("after")
            registered = [await _registered_in(dsn) for dsn in (before, after)]
        finally:
            await cluster.stop()
    # The coordinator and three workers, in the database made before and the one after.
    expected = {cluster.coordinator.port, *(worker.port for worker in cluster.workers)}
    assert added in cluster.workers
    assert [set(ports) for ports in registered] == [expected, expected]


async def _registered_in(dsn: str) -> dict[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await _registered(conn)
    finally:
        await conn.close()
