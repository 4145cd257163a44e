"""Capacity model (docs/scaling.md): what one PostgreSQL carries, measured on this machine.

Stages, each printed as a table (all written to bench/results/<time>-<sha>-capacity.json):

- `cpu`: every RPC scenario of `make bench`, plus `logout`, `logout_watched` (with 20
  WatchRevocations subscribers: the feed's CPU per event) and `*_uncached` (on a server
  without the statement cache, as behind PgBouncer 1.18), in turns, with CPU per call on
  both sides over the same measured window: the service's (the `authsvc serve` process tree,
  as `make bench` counts it) and the database's (the postmaster's process tree from /proc,
  plus the CPU of backends that exited in the window, which the kernel adds to the
  postmaster's cutime/cstime). The database side is every PostgreSQL process, so it includes
  the WAL writer, checkpointer and autovacuum: what a database host pays.
- `replicas`: `mixed` and `refresh` on 1, 2, ... server processes (`serve --workers N`, each
  its own pool and feed connection, as a replica), in turns: calls/s and cores used on each
  side.
- `budget`: the connection budget from the settings' defaults (authsvc/config.py) and the
  database's `max_connections`.
- `sizes`: N sessions made through the real RPCs (Register, two Logins per user, three keyed
  Refreshes per session, Logout of one in ten) while a WatchRevocations subscriber counts
  the feed's bytes; then table and index sizes; then every timestamp aged 400 days and one
  `authsvc sweep` pass timed. argon2 runs with cheap parameters here: the hash's length,
  not its cost, is what lands in the table.

    .venv/bin/python -m bench.capacity                      # all stages
    .venv/bin/python -m bench.capacity --stages sizes --sessions 50000
    .venv/bin/python -m bench.capacity --smoke              # every stage, tiny (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import argon2
import asyncpg
import grpc

from authsvc import config as authsvc_config
from authsvc.embedded_db import DATABASE_NAME, start_embedded_postgres
from authsvc.service_keys import mint_service_key
from authsvc.store import pool as store_pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from bench import __main__ as bench_main
from bench.report import Run
from bench.seed import Seeder
from bench.servers import (
    ServerProcess,
    process_tree,
    start_authsvc,
    start_empty_server,
    wait_serving,
    with_key_encryption_keys,
)

if TYPE_CHECKING:
    Stub: TypeAlias = auth_service_pb2_grpc.AuthServiceAsyncStub
else:
    Stub = auth_service_pb2_grpc.AuthServiceStub

STAGES = ("cpu", "replicas", "budget", "sizes")
CPU_SCENARIOS = (
    "grpc_empty", "get_jwks", "validate", "refresh", "list_sessions", "revoke_session",
    "logout", "logout_watched", "login", "mixed", "refresh_uncached", "mixed_uncached",
)  # fmt: skip
# *_uncached: the scenario on a server set as behind PgBouncer 1.18 but connected directly
# (AUTHSVC_DATABASE_POOLER=pgbouncer-transaction: no prepared-statement cache), so the
# database parses every statement again: its cost per call without the extra hop.
_UNCACHED = "_uncached"
_UNCACHED_SETTINGS = {"AUTHSVC_DATABASE_POOLER": "pgbouncer-transaction"}
# logout_watched: logout with this many WatchRevocations subscribers on the server, so the
# difference from logout, divided by it, is the service's CPU per event sent.
_WATCHERS = 20
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_LOGOUT_RATE_GUESS = 2500.0  # calls/s: sizes the sessions logout may use up
_RESULTS = Path(__file__).parent / "results"
# sizes: cheap argon2 (the stored hash has the same length), sign-ups unthrottled.
_SIZES_SETTINGS = {
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_MEMORY_KIB": "1024",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
    "AUTHSVC_SIGN_UPS_PER_IP": "100000000",
    "AUTHSVC_SIGN_UPS_TOTAL": "100000000",
}
_REFRESHES_PER_SESSION = 3
_LOGOUT_EVERY = 10  # one session in ten is logged out
_AGE = "400 days"  # past every retention, so one sweep pass has everything to do
# Tables whose rows a sweep must not see aged: the keys sign, the migrations are history.
_NOT_AGED = ("signing_keys", "schema_migrations")
# On the wire, each streamed message: gRPC's 5-byte prefix and HTTP/2's 9-byte DATA header.
_FRAMING_BYTES = 5 + 9


def _cpu_of(pid: int, *, children: bool = False) -> int:
    """utime + stime (and, with `children`, cutime + cstime) of `pid`, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks + (int(fields[13]) + int(fields[14]) if children else 0)


def database_cpu_seconds(postmaster: int) -> float:
    """CPU of every PostgreSQL process so far: the live ones, and (through the postmaster's
    children's times) every backend that has exited."""
    ticks = _cpu_of(postmaster, children=True)
    ticks += sum(_cpu_of(pid) for pid in process_tree([postmaster]) if pid != postmaster)
    return ticks / _CLOCK_TICKS


class CapacityBench(bench_main.Bench):
    """`make bench`'s harness, plus `logout` and the database's CPU over each window."""

    postmaster: int = 0
    uncached: ServerProcess | None = None

    async def slots_for(self, scenario: str, window: float, rate: float) -> list[dict[str, Any]]:
        if scenario != "logout":
            return await super().slots_for(scenario, window, rate)
        assert self.seeder is not None
        per_slot = math.ceil(_LOGOUT_RATE_GUESS * window / self.args.concurrency) + 1
        users = await self.seeder.users_with_sessions(self.args.concurrency, per_slot)
        return [{"refresh_tokens": [s.refresh_token for s in mine]} for mine in users]

    async def measure(self, scenario: str) -> Run:
        """One window of `scenario`, with the database's CPU over the same window."""
        duration = self.args.duration

        async def database_window() -> dict[str, float]:
            before, started = database_cpu_seconds(self.postmaster), time.monotonic()
            await asyncio.sleep(duration)
            return {
                "cpu_s": database_cpu_seconds(self.postmaster) - before,
                "window_s": time.monotonic() - started,
            }

        if scenario.endswith(_UNCACHED):
            cached, self.authsvc = self.authsvc, self.uncached
            try:
                run = await self.run_once(scenario.removesuffix(_UNCACHED), during=database_window)
            finally:
                self.authsvc = cached
        elif scenario == "logout_watched":
            assert self.authsvc is not None
            feeds = [_Feed(self.authsvc.target, self.service_key) for _ in range(_WATCHERS)]
            for feed in feeds:
                feed.start()
            try:
                for feed in feeds:
                    await feed.live()
                run = await self.run_once("logout", during=database_window)
            finally:
                for feed in feeds:
                    await feed.stop(expected=0)
            run["events_per_watcher"] = min(feed.revocations for feed in feeds)
        else:
            run = await self.run_once(scenario, during=database_window)
        calls, window = run["calls"], run["window_s"]
        service_ms = run["server_cpu_s_per_1k_calls"]
        database_ms = run["during"]["cpu_s"] / calls * 1000 if calls else None
        run["database_cpu_ms_per_call"] = database_ms
        run["service_cores"] = (service_ms or 0.0) * calls / 1000 / window
        run["database_cores"] = run["during"]["cpu_s"] / window
        run["load_average"] = os.getloadavg()[0]
        return run


def _median(runs: list[Run], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def _summary(runs: list[Run]) -> dict[str, Any]:
    keys = (
        "calls_per_s", "server_cpu_s_per_1k_calls", "database_cpu_ms_per_call",
        "service_cores", "database_cores", "p50_ms", "p99_ms", "load_average",
    )  # fmt: skip
    out: dict[str, Any] = {key: _median(runs, key) for key in keys}
    out["service_cpu_ms_per_call"] = out.pop("server_cpu_s_per_1k_calls")
    out["errors"] = sum(run["error_count"] for run in runs)
    service, database = out["service_cpu_ms_per_call"], out["database_cpu_ms_per_call"]
    out["service_to_database"] = service / database if service and database else None
    return out


def _progress(label: str, run: Run) -> None:
    service = run["server_cpu_s_per_1k_calls"]
    database = run["database_cpu_ms_per_call"]
    print(
        f"{label}: {run['calls_per_s']:,.0f}/s, service "
        f"{'-' if service is None else f'{service:.3f}'} ms/call, database "
        f"{'-' if database is None else f'{database:.3f}'} ms/call, errors "
        f"{run['error_count']}, load {run['load_average']:.1f}",
        file=sys.stderr,
        flush=True,
    )


async def _cpu_stage(bench: CapacityBench, scenarios: tuple[str, ...]) -> dict[str, Any]:
    """Every scenario once per round, rounds repeated: all see the same drift."""
    runs: dict[str, list[Run]] = {scenario: [] for scenario in scenarios}
    for index in range(bench.args.runs):
        for scenario in scenarios:
            run = await bench.measure(scenario)
            runs[scenario].append(run)
            _progress(f"cpu {scenario} {index + 1}/{bench.args.runs}", run)
    summaries = {scenario: _summary(scenario_runs) for scenario, scenario_runs in runs.items()}
    watched, unwatched = summaries.get("logout_watched"), summaries.get("logout")
    if watched and unwatched and watched["service_cpu_ms_per_call"]:
        extra = watched["service_cpu_ms_per_call"] - unwatched["service_cpu_ms_per_call"]
        summaries["watch_revocations_event"] = {
            "service_cpu_ms_per_event": extra / _WATCHERS,
            "watchers": _WATCHERS,
            "events_per_watcher_min": min(r["events_per_watcher"] for r in runs["logout_watched"]),
        }
    return summaries


async def _replicas_stage(
    bench: CapacityBench, servers: dict[int, ServerProcess], scenarios: tuple[str, ...]
) -> dict[str, Any]:
    """Each of `scenarios` on 1..N server processes, in turns."""
    runs: dict[tuple[str, int], list[Run]] = {
        (scenario, processes): [] for scenario in scenarios for processes in servers
    }
    first = bench.authsvc
    try:
        for index in range(bench.args.runs):
            for (scenario, processes), scenario_runs in runs.items():
                bench.authsvc = servers[processes]
                run = await bench.measure(scenario)
                scenario_runs.append(run)
                _progress(f"replicas {scenario} x{processes} {index + 1}/{bench.args.runs}", run)
    finally:
        bench.authsvc = first
    return {
        scenario: {str(processes): _summary(runs[scenario, processes]) for processes in servers}
        for scenario in scenarios
    }


async def _budget_stage(pool: asyncpg.Pool) -> dict[str, Any]:
    """The defaults the connection budget is made of, read from where they are declared."""
    defaults = authsvc_config.from_env({})
    max_connections = int(await pool.fetchval("SHOW max_connections"))
    reserved = int(await pool.fetchval("SHOW superuser_reserved_connections"))
    pool_max = defaults.db_pool_max_size
    lock_pool = store_pool._SESSION_POOL_MAX_SIZE
    rows = []
    for replicas in (1, 2, 5, 10, 20, 50):
        for workers in (2, 4):
            processes = replicas * workers
            rows.append(
                {
                    "replicas": replicas,
                    "workers": workers,
                    "direct": processes * (pool_max + 1),
                    "pgbouncer_clients": processes * pool_max,
                    "pgbouncer_direct_at_most": processes * (1 + lock_pool),
                }
            )
    return {
        "AUTHSVC_DB_POOL_MAX_SIZE": pool_max,
        "AUTHSVC_WORKERS (this machine)": defaults.workers,
        "session_lock_pool_max": lock_pool,
        "max_connections": max_connections,
        "superuser_reserved_connections": reserved,
        "usable": max_connections - reserved,
        "rows": rows,
    }


class _Feed:
    """A WatchRevocations subscriber that counts revocations, heartbeats and their bytes."""

    def __init__(self, target: str, service_key: str) -> None:
        self._target, self._service_key = target, service_key
        self.revocations = self.revocation_bytes = self.heartbeats = self.heartbeat_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._expected: int | None = None
        self._all_seen = asyncio.Event()
        self._caught_up = asyncio.Event()  # a heartbeat: the snapshot is sent, it is live

    async def _watch(self) -> None:
        """Subscribe, and on UNAVAILABLE (the server's connection max age, or its stopping)
        resume from the last cursor, as a client does, until cancelled."""
        cursor = 0
        while True:
            async with grpc.aio.insecure_channel(self._target) as channel:
                stream = Stub(channel).WatchRevocations(
                    pb.WatchRevocationsRequest(after_cursor=cursor),
                    metadata=(("authorization", f"Bearer {self._service_key}"),),
                )
                try:
                    async for message in stream:
                        size = message.ByteSize() + _FRAMING_BYTES
                        if message.HasField("revocation"):
                            cursor = message.revocation.cursor
                            self.revocations += 1
                            self.revocation_bytes += size
                            if self._expected is not None and self.revocations >= self._expected:
                                self._all_seen.set()
                        else:
                            cursor = message.heartbeat.cursor
                            self._caught_up.set()
                            self.heartbeats += 1
                            self.heartbeat_bytes += size
                except grpc.aio.AioRpcError as exc:
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def live(self, within: float = 60.0) -> None:
        """Once the feed has sent a heartbeat: its snapshot of recent revocations (every
        session ended within the retention) is behind it, so only new events follow."""
        await asyncio.wait_for(self._caught_up.wait(), within)
        self.revocations = self.revocation_bytes = 0  # count the new ones only

    async def stop(self, expected: int, within: float = 10.0) -> None:
        """Once `expected` revocations have come (or after `within` s, if they never do)."""
        self._expected = expected
        if self.revocations >= expected:
            self._all_seen.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_seen.wait(), within)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _make_sessions(target: str, users: int, concurrency: int) -> dict[str, int]:
    """Per user: Register (no session, by default), two Logins (two devices), each session
    refreshed with a new idempotency key `_REFRESHES_PER_SESSION` times; every
    `_LOGOUT_EVERY`th session logged out. Counts the calls by RPC; any failure stops it."""
    calls = dict.fromkeys(("Register", "Login", "Refresh", "Logout"), 0)
    password = bench_main.PASSWORD
    next_user = iter(range(users))
    channels = [grpc.aio.insecure_channel(target) for _ in range(4)]

    async def user_life(stub: Stub, index: int) -> None:
        email = f"capacity-{uuid.uuid4().hex[:12]}@example.com"
        await stub.Register(
            pb.RegisterRequest(email=email, password=password, display_name="Capacity"),
            timeout=60,
        )
        calls["Register"] += 1
        for device in range(2):
            signed_in = await stub.Login(
                pb.LoginRequest(email=email, password=password), timeout=60
            )
            calls["Login"] += 1
            refresh_token = signed_in.refresh_token
            for _ in range(_REFRESHES_PER_SESSION):
                response = await stub.Refresh(
                    pb.RefreshRequest(
                        refresh_token=refresh_token, idempotency_key=str(uuid.uuid4())
                    ),
                    timeout=60,
                )
                refresh_token = response.refresh_token
                calls["Refresh"] += 1
            if (2 * index + device) % _LOGOUT_EVERY == 0:
                await stub.Logout(pb.LogoutRequest(refresh_token=refresh_token), timeout=60)
                calls["Logout"] += 1

    async def worker(stub: Stub) -> None:
        for index in next_user:
            await user_life(stub, index)

    try:
        async with asyncio.TaskGroup() as group:
            for slot in range(concurrency):
                group.create_task(worker(Stub(channels[slot % len(channels)])))
    finally:
        for channel in channels:
            await channel.close()
    return calls


_RELATIONS = """
SELECT c.relname AS name, c.relkind::text AS kind,
       coalesce(i.indrelid::regclass::text, c.relname) AS table_name,
       pg_total_relation_size(c.oid) AS total_bytes, pg_relation_size(c.oid) AS main_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indexrelid = c.oid
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
ORDER BY table_name, c.relkind DESC, c.relname
"""


async def _row_counts(pool: asyncpg.Pool, tables: list[str]) -> dict[str, int]:
    counts = {}
    for table in tables:
        # Names from pg_class, quoted: not user input.
        counts[table] = int(await pool.fetchval(f'SELECT count(*) FROM "{table}"'))  # noqa: S608
    return counts


async def _sizes(pool: asyncpg.Pool) -> dict[str, Any]:
    await pool.execute("VACUUM ANALYZE")
    relations = [dict(row) for row in await pool.fetch(_RELATIONS)]
    tables = [r["name"] for r in relations if r["kind"] == "r"]
    counts = await _row_counts(pool, tables)
    sessions = counts.get("sessions", 0)
    per_million = 1_000_000 / sessions if sessions else 0.0
    out: dict[str, Any] = {"sessions": sessions, "tables": {}}
    for relation in relations:
        table = relation["table_name"]
        entry = out["tables"].setdefault(table, {"rows": counts.get(table, 0), "indexes": {}})
        if relation["kind"] == "r":
            rows = entry["rows"]
            entry["heap_bytes"] = relation["main_bytes"]
            entry["total_bytes"] = relation["total_bytes"]
            entry["bytes_per_row"] = relation["total_bytes"] / rows if rows else None
            entry["rows_per_session"] = rows / sessions if sessions else None
            entry["mib_per_million_sessions"] = relation["total_bytes"] * per_million / 2**20
            entry["heap_mib_per_million_sessions"] = relation["main_bytes"] * per_million / 2**20
        else:
            entry["indexes"][relation["name"]] = relation["main_bytes"]
    for entry in out["tables"].values():
        entry["index_mib_per_million_sessions"] = {
            name: size * per_million / 2**20 for name, size in entry["indexes"].items()
        }
    return out


async def _age_everything(admin_dsn: str) -> None:
    """Every timestamp of every table but `_NOT_AGED` moved `_AGE` back, triggers off
    (the audit trail refuses updates), as if the sessions had been left that long."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        columns = await conn.fetch(
            """SELECT table_name, array_agg(column_name::text) AS columns
               FROM information_schema.columns
               WHERE table_schema = 'public' AND data_type = 'timestamp with time zone'
               GROUP BY table_name"""
        )
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for row in columns:
                if row["table_name"] in _NOT_AGED:
                    continue
                moved = ", ".join(f'"{c}" = "{c}" - interval \'{_AGE}\'' for c in row["columns"])
                await conn.execute(f'UPDATE "{row["table_name"]}" SET {moved}')  # noqa: S608
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def _sweep_once(dsn: str, work_dir: Path) -> tuple[float, str]:
    """One `authsvc sweep` pass with the default sweep settings: seconds and its report."""
    env = with_key_encryption_keys(
        {**os.environ, "AUTHSVC_DATABASE_URL": dsn, "AUTHSVC_DATA_DIR": str(work_dir / "sweep")}
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "authsvc", "sweep"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.monotonic() - started, done.stdout.strip()


async def _sizes_stage(
    dsn: str, admin_dsn: str, work_dir: Path, sessions: int, concurrency: int
) -> dict[str, Any]:
    service_key, service_key_entry = mint_service_key("capacity")
    server = start_authsvc(
        dsn,
        work_dir,
        "WARNING",
        workers=2,
        service_keys=service_key_entry,
        name="authsvc-sizes",
        settings=_SIZES_SETTINGS,
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await wait_serving(server.target)
        feed = _Feed(server.target, service_key)
        feed.start()
        await feed.live()
        started = time.monotonic()
        calls = await _make_sessions(server.target, max(1, sessions // 2), concurrency)
        loaded_in = time.monotonic() - started
        await feed.stop(expected=calls["Logout"])
        server.stop()
        sizes = await _sizes(pool)
        log_rows = sizes["tables"].get("revocation_log", {})
        await _age_everything(admin_dsn)
        before = await _row_counts(pool, list(sizes["tables"]))
        seconds, report_line = _sweep_once(dsn, work_dir)
        after = await _row_counts(pool, list(sizes["tables"]))
    finally:
        server.stop()
        await pool.close()
    deleted = {t: before[t] - after[t] for t in before if before[t] > after[t]}
    return {
        "calls": calls,
        "load_seconds": loaded_in,
        "sizes": sizes,
        "feed": {
            "revocations_seen": feed.revocations,
            "logouts": calls["Logout"],
            "bytes_per_revocation_on_wire": feed.revocation_bytes / feed.revocations
            if feed.revocations
            else None,
            "heartbeats_seen": feed.heartbeats,
            "bytes_per_heartbeat_on_wire": feed.heartbeat_bytes / feed.heartbeats
            if feed.heartbeats
            else None,
            "log_bytes_per_revocation": log_rows.get("bytes_per_row"),
        },
        "sweep": {
            "seconds": seconds,
            "report": report_line,
            "rows_deleted": deleted,
            "rows_deleted_per_s": sum(deleted.values()) / seconds,
        },
    }


def _print_tables(result: dict[str, Any]) -> None:
    def row(cells: list[str]) -> None:
        print("| " + " | ".join(cells) + " |")

    def number(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    if cpu := result.get("cpu"):
        print("\nCPU per call (medians), service = authsvc processes, database = PostgreSQL's")
        row(["scenario", "calls/s", "service ms", "database ms", "service/database", "errors"])
        row(["---"] * 6)
        for name, s in cpu.items():
            row([name, number(s["calls_per_s"], 0), number(s["service_cpu_ms_per_call"]),
                 number(s["database_cpu_ms_per_call"]), number(s["service_to_database"], 1),
                 str(s["errors"])])  # fmt: skip
    if watched := result.get("watch_revocations"):
        print(f"WatchRevocations, per event sent: {json.dumps(watched)}")
    for scenario, replicas in result.get("replicas", {}).items():
        print(f"\n{scenario} on N server processes (medians)")
        row(["processes", "calls/s", "service cores", "database cores", "service/database"])
        row(["---"] * 5)
        for processes, s in replicas.items():
            row([processes, number(s["calls_per_s"], 0), number(s["service_cores"], 2),
                 number(s["database_cores"], 2), number(s["service_to_database"], 1)])  # fmt: skip
    if budget := result.get("budget"):
        print(
            f"\nconnection budget: {json.dumps({k: v for k, v in budget.items() if k != 'rows'})}"
        )
        row(["replicas", "workers", "direct", "via PgBouncer: clients", "via PgBouncer: direct"])
        row(["---"] * 5)
        for r in budget["rows"]:
            row([str(r["replicas"]), str(r["workers"]), str(r["direct"]),
                 str(r["pgbouncer_clients"]), str(r["pgbouncer_direct_at_most"])])  # fmt: skip
    if sizes := result.get("sizes"):
        tables = sizes["sizes"]["tables"]
        print(f"\n{sizes['sizes']['sessions']} sessions, made by {sizes['calls']} "
              f"in {sizes['load_seconds']:.0f} s")  # fmt: skip
        row(["table", "rows", "rows/session", "bytes/row", "MiB per 1M sessions", "of it heap"])
        row(["---"] * 6)
        for name, t in sorted(tables.items(), key=lambda item: -item[1].get("total_bytes", 0)):
            if t["rows"]:
                row([name, str(t["rows"]), number(t["rows_per_session"], 2),
                     number(t["bytes_per_row"], 0), number(t["mib_per_million_sessions"], 1),
                     number(t["heap_mib_per_million_sessions"], 1)])  # fmt: skip
        print("indexes, MiB per 1M sessions:")
        for name, t in sorted(tables.items()):
            if t["rows"]:
                shown = ", ".join(
                    f"{index} {size:,.1f}"
                    for index, size in t["index_mib_per_million_sessions"].items()
                )
                print(f"  {name}: {shown}")
        print(f"feed: {json.dumps(sizes['feed'])}")
        print(f"sweep: {json.dumps(sizes['sweep'])}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--scenarios", default=",".join(CPU_SCENARIOS), help="the cpu stage's")
    parser.add_argument("--duration", type=float, default=8.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="rounds of every scenario")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--max-replicas", type=int, default=3, help="replicas stage: 1..N")
    parser.add_argument(
        "--replica-scenarios",
        default="mixed,refresh",
        help="the replicas stage's: mixed, and refresh (the database's heaviest share)",
    )
    parser.add_argument("--sessions", type=int, default=20_000, help="sizes stage")
    parser.add_argument("--smoke", action="store_true", help="every stage, tiny, for CI")
    args = parser.parse_args(argv)
    args.stages = [s for s in args.stages.split(",") if s]
    args.scenarios = tuple(s for s in args.scenarios.split(",") if s)
    args.replica_scenarios = tuple(s for s in args.replica_scenarios.split(",") if s)
    if unknown := set(args.stages) - set(STAGES):
        parser.error(f"unknown stages: {sorted(unknown)}")
    if unknown := set(args.scenarios + args.replica_scenarios) - set(CPU_SCENARIOS):
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if args.smoke:
        args.duration, args.warmup, args.runs = 1.0, 0.5, 1
        args.concurrency, args.processes, args.max_replicas, args.sessions = 8, 1, 2, 40
    return args


async def _run(args: argparse.Namespace, work_dir: Path, embedded: Any) -> dict[str, Any]:
    dsn = embedded.dsn()
    bench_args = bench_main._parse([
        "--duration", str(args.duration), "--warmup", str(args.warmup), "--runs", str(args.runs),
        "--concurrency", str(args.concurrency), "--processes", str(args.processes),
        "--server-log-level", "WARNING",
    ])  # fmt: skip
    result: dict[str, Any] = {}
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    servers: dict[int, ServerProcess] = {}
    service_key, service_key_entry = mint_service_key("capacity")
    bench = CapacityBench(bench_args, pool, dsn, work_dir, service_key)
    bench.postmaster = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
    try:
        if "cpu" in args.stages or "replicas" in args.stages:
            processes = range(1, args.max_replicas + 1) if "replicas" in args.stages else (1,)
            for count in processes:
                servers[count] = start_authsvc(
                    dsn,
                    work_dir,
                    "WARNING",
                    workers=count,
                    name=f"authsvc-{count}",
                    service_keys=service_key_entry,
                )
            bench.authsvc = servers[1]
            if any(scenario.endswith(_UNCACHED) for scenario in args.scenarios):
                bench.uncached = start_authsvc(
                    dsn,
                    work_dir,
                    "WARNING",
                    name="authsvc-uncached",
                    settings={**_UNCACHED_SETTINGS, "AUTHSVC_LISTEN_DATABASE_URL": dsn},
                )
                await wait_serving(bench.uncached.target)
            bench.empty = start_empty_server(work_dir)
            for server in servers.values():
                await wait_serving(server.target)
            bench.seeder = Seeder(
                pool, bench.authsvc.target, argon2.PasswordHasher().hash(bench_main.PASSWORD)
            )
            await bench.prepare_load_processes()
            if "cpu" in args.stages:
                result["cpu"] = await _cpu_stage(bench, args.scenarios)
                if watched := result["cpu"].pop("watch_revocations_event", None):
                    result["watch_revocations"] = watched
            if "replicas" in args.stages:
                result["replicas"] = await _replicas_stage(bench, servers, args.replica_scenarios)
        if "budget" in args.stages:
            result["budget"] = await _budget_stage(pool)
    finally:
        bench.executor.shutdown(cancel_futures=True)
        for started in (*servers.values(), bench.uncached, bench.empty):
            if started is not None:
                started.stop()
        await pool.close()
    if "sizes" in args.stages:
        # A database of its own: the cpu stage's seeded rows are not a realistic mix.
        fresh = start_embedded_postgres(work_dir / "pg-sizes")
        try:
            await fresh.ensure_service_database()
            result["sizes"] = await _sizes_stage(
                fresh.dsn(), fresh.admin_dsn(DATABASE_NAME), work_dir, args.sessions, 32
            )
        finally:
            fresh.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="authsvc-capacity-") as tmp:
        work_dir = Path(tmp)
        embedded = start_embedded_postgres(work_dir / "pg")
        try:
            asyncio.run(embedded.ensure_service_database())
            result = asyncio.run(_run(args, work_dir, embedded))
        finally:
            embedded.stop()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": bench_main._git_sha(),
        "argv": sys.argv[1:] if argv is None else argv,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        **result,
    }
    _print_tables(result)
    _RESULTS.mkdir(exist_ok=True)
    suffix = "-smoke" if args.smoke else ""
    path = _RESULTS / f"{datetime.now(UTC):%Y-%m-%dT%H%M}-{result['git_sha']}-capacity{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    summaries = [*result.get("cpu", {}).values()]
    summaries += [s for by_count in result.get("replicas", {}).values() for s in by_count.values()]
    errors = sum(s["errors"] for s in summaries)
    if errors:
        sys.exit(f"{errors} calls failed")


if __name__ == "__main__":
    main()
