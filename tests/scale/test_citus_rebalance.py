"""A live rebalance onto a third Citus worker under a steady Refresh load loses nothing.

The scenario (tests/scale/citus_rebalance.py) runs once: a server on a coordinator and two
workers, clients refreshing their sessions in a loop, a third worker added and
`citus_rebalance_start()` waited for. Each test asserts one thing the clients depend on; the
refreshes after it go through a `serve` process started after the rebalance, so they read
what the cluster holds, not what the first server's pool remembers. The failed calls and the
rebalance's duration are measured by `python -m bench.citus --rebalance`, never asserted here.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from authsvc.embedded_db import DATABASE_NAME
from tests.helpers import refresh
from tests.processes import ServerGroup, ServerProcess
from tests.scale.citus_cluster import CitusCluster
from tests.scale.citus_rebalance import OK, Rebalance, run_rebalance, token_hash

pytestmark = pytest.mark.asyncio(loop_scope="session")

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class AfterRebalance:
    run: Rebalance
    # A server process started after the rebalance, on the same coordinator.
    server: ServerProcess


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def after() -> AsyncIterator[AfterRebalance]:
    with tempfile.TemporaryDirectory(prefix="authsvc-citus-rebalance-") as root:
        cluster = CitusCluster(Path(root))
        group = ServerGroup()
        try:
            await cluster.start()
            dsn = await cluster.create_database(DATABASE_NAME)
            run = await run_rebalance(cluster, dsn)
            yield AfterRebalance(run, await group.start_ready(dsn))
        finally:
            await group.close()
            await cluster.stop()


def _tally(run: Rebalance) -> dict[str, int]:
    counted: dict[str, int] = {}
    for call in run.calls:
        name = f"{call.outcome[0].name} {call.outcome[1]}".strip()
        counted[name] = counted.get(name, 0) + 1
    return counted


async def test_the_rebalance_moves_shards_onto_the_new_worker(after: AfterRebalance) -> None:
    moves, placed = after.run.moves, after.run.shards_on_new_worker

    assert moves > 0
    assert placed > 0


async def test_calls_during_a_rebalance_fail_only_with_unavailable(after: AfterRebalance) -> None:
    wrong = [call for call in after.run.failed if call.outcome[0] != UNAVAILABLE]

    assert not wrong, f"{_tally(after.run)}; logged: {after.run.errors_logged[-3:]}"
    # Not vacuous: the load ran right through the rebalance.
    assert any(call.outcome == OK for call in after.run.during), _tally(after.run)


async def test_every_clients_newest_token_refreshes_after_the_rebalance(
    after: AfterRebalance,
) -> None:
    answers = [await refresh(after.server.stub, pair.refresh_token) for pair in after.run.held]

    assert [answer.session_id for answer in answers] == [p.session_id for p in after.run.held]


async def test_no_session_ends_as_refresh_token_reuse(after: AfterRebalance) -> None:
    reuse_endings = after.run.after.reuse_endings

    assert reuse_endings == 0


async def test_the_rebalance_loses_no_session(after: AfterRebalance) -> None:
    before, now = after.run.before.session_ids, after.run.after.session_ids

    assert now == before


async def test_the_rebalance_loses_no_refresh_token(after: AfterRebalance) -> None:
    before, now = after.run.before.token_hashes, after.run.after.token_hashes

    assert before <= now
    assert {token_hash(pair.refresh_token) for pair in after.run.held} <= now
    # One row per acknowledged rotation, none more, none fewer.
    assert len(now) - len(before) == after.run.answered
