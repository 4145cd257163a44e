"""A live rebalance onto a new Citus worker under a steady Refresh load: what
tests/scale/test_citus_rebalance.py asserts and `python -m bench.citus --rebalance` measures.

A `serve` process runs on the coordinator of a cluster with two workers. Each client is a user
of its own (so the load spans shards) refreshing one session's chain in a loop, keeping the
newest pair it was answered and an idempotency key per rotation, as failover_scenario.py's
clients do (its load is reused here). Once every client has been answered, a third worker
joins (`CitusCluster.add_worker`), `citus_rebalance_start()` moves shards onto it in the
background, and `citus_rebalance_wait()` returns when it is done; the load runs on until every
client has been answered again after it. What the tables held is read before the load starts
and after it stops, on the coordinator.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass

import asyncpg

from tests.helpers import Pair, pair_of, register
from tests.processes import ServerGroup
from tests.scale.citus_cluster import CitusCluster

# The failover scenario's load and wait, as they are: the same clients in both scenarios.
from tests.scale.failover_scenario import OK, Call, _Chain, _RefreshLoad, _until
from tests.scale.postgres_host import HOST

__all__ = ["CLIENTS", "OK", "Rebalance", "Tables", "read_tables", "run_rebalance", "token_hash"]

# Users refreshing at once, each on whichever shard its id hashes to: with 8 shards per
# co-located group, enough that both workers serve some and some sit on moved shards.
CLIENTS = 8

_SESSIONS = "SELECT id FROM sessions"
_TOKENS = "SELECT token_hash FROM refresh_tokens"
_REUSE_ENDINGS = "SELECT count(*) FROM sessions WHERE end_reason = 'refresh_token_reuse'"
_SHARDS_ON = "SELECT count(*) FROM citus_shards WHERE nodename = $1 AND nodeport = $2"
_START = "SELECT citus_rebalance_start()"
_WAIT = "SELECT citus_rebalance_wait()"
# The moves of the job just waited for: the background tasks it ran.
_MOVES = """
SELECT count(*) FROM pg_dist_background_task
WHERE job_id = (SELECT max(job_id) FROM pg_dist_background_job)
"""


@dataclass(frozen=True, slots=True)
class Tables:
    """What the service's tables held, read on the coordinator."""

    session_ids: frozenset[str]
    token_hashes: frozenset[bytes]
    reuse_endings: int


@dataclass(frozen=True, slots=True)
class Rebalance:
    started_at: float  # citus_rebalance_start() called (time.monotonic())
    ended_at: float  # citus_rebalance_wait() returned
    moves: int  # shard moves the rebalance job ran
    shards_on_new_worker: int
    calls: tuple[Call, ...]  # every call of the load, first to last
    held: tuple[Pair, ...]  # each client's newest pair when the load stopped
    before: Tables
    after: Tables
    # Why calls failed, as the server logged it: each ERROR line's last line of traceback.
    errors_logged: tuple[str, ...]

    @property
    def failed(self) -> list[Call]:
        return [call for call in self.calls if call.outcome != OK]

    @property
    def answered(self) -> int:
        """Rotations acknowledged: each wrote one refresh token (a retry of an unanswered
        rotation, with its key, is answered with the successor that rotation wrote)."""
        return len(self.calls) - len(self.failed)

    @property
    def during(self) -> list[Call]:
        """The calls that ended while the rebalance ran."""
        return [c for c in self.calls if self.started_at <= c.ended <= self.ended_at]

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at


def token_hash(refresh_token: str) -> bytes:
    """How the store keys a refresh token (SHA-256 of the whole string)."""
    return hashlib.sha256(refresh_token.encode("ascii")).digest()


async def read_tables(dsn: str) -> Tables:
    conn = await asyncpg.connect(dsn)
    try:
        return Tables(
            session_ids=frozenset(str(row[0]) for row in await conn.fetch(_SESSIONS)),
            token_hashes=frozenset(bytes(row[0]) for row in await conn.fetch(_TOKENS)),
            reuse_endings=int(await conn.fetchval(_REUSE_ENDINGS)),
        )
    finally:
        await conn.close()


async def run_rebalance(
    cluster: CitusCluster, dsn: str, *, steady_seconds: float = 0.0
) -> Rebalance:
    """On `cluster` (a coordinator, two workers) and its service database `dsn`: serve, load,
    add a worker, rebalance onto it, load until every client is answered after it."""
    group = ServerGroup()
    try:
        # Quick to replace a connection a move broke: the pool reconnects itself.
        # Warnings and errors only, so the last lines of stderr it keeps say why calls failed.
        server = await group.start_ready(
            dsn, AUTHSVC_DB_CONNECT_TIMEOUT="2s", AUTHSVC_LOG_LEVEL="WARNING"
        )
        stub = server.stub
        chains = []
        for client in range(CLIENTS):
            email = f"rebalance-{client}@example.com"
            chains.append(_Chain(pair_of(await register(stub, email))))
        before = await read_tables(dsn)
        load = _RefreshLoad(stub, chains)
        load.start()
        try:
            steady = time.monotonic()
            await _until(lambda: load.recovered_at(steady) is not None, "steady load")
            await asyncio.sleep(steady_seconds)
            worker = await cluster.add_worker()
            conn = await asyncpg.connect(dsn)
            try:
                started = time.monotonic()
                await conn.execute(_START)
                await conn.execute(_WAIT)
                ended = time.monotonic()
                moves = int(await conn.fetchval(_MOVES))
                on_new = int(await conn.fetchval(_SHARDS_ON, HOST, worker.port))
            finally:
                await conn.close()
            await _until(lambda: load.recovered_at(ended) is not None, "load after the rebalance")
        finally:
            await load.stop()
        after = await read_tables(dsn)
        return Rebalance(
            started_at=started,
            ended_at=ended,
            moves=moves,
            shards_on_new_worker=on_new,
            calls=tuple(load.calls),
            held=tuple(chain.held for chain in chains),
            before=before,
            after=after,
            errors_logged=_errors_logged(server.stderr_tail),
        )
    finally:
        await group.close()


def _errors_logged(stderr: str) -> tuple[str, ...]:
    """The last line of each logged traceback (the exception), as the server logged it."""
    found = []
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "ERROR":
            exception = str(entry.get("exception") or entry.get("message", ""))
            found.append(exception.strip().splitlines()[-1] if exception.strip() else "")
    return tuple(found)
