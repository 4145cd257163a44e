"""Plain PostgreSQL against Citus (a coordinator and two workers) under `make bench`'s mixed
workload, side by side in one run; and a live rebalance onto a third worker.

The comparison: one authsvc server on a plain PostgreSQL and one on a Citus coordinator, each
driven by `make bench`'s load processes with the `mixed` scenario (bench/load.py: validate,
refresh, login, list sessions, logout), in turns (plain, then Citus, each round), so both see
the same drift of a shared machine. Per backend: calls/s, and CPU per call over the same
window of the service (the `serve` process tree) and of each PostgreSQL node (its postmaster's
process tree from /proc, plus the backends that exited in the window: capacity.py's count),
coordinator and workers apart; then Citus's figures as ratios of the plain server's.

The rebalance (tests/scale/citus_rebalance.py, asserted by tests/scale/test_citus_rebalance.py):
clients refreshing in a loop while a third worker joins and `citus_rebalance_start()` moves
shards onto it; prints its duration, its moves and the calls that failed, by outcome.

    .venv/bin/python -m bench.citus                  # 3 rounds of 8 s windows
    .venv/bin/python -m bench.citus --smoke          # one round of 1 s (CI: bench-smoke)
    .venv/bin/python -m bench.citus --rebalance
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import argon2
import asyncpg

from authsvc.embedded_db import DATABASE_NAME, start_embedded_postgres
from bench import __main__ as bench_main
from bench.capacity import database_cpu_seconds
from bench.report import Run
from bench.seed import Seeder
from bench.servers import ServerProcess, start_authsvc, start_empty_server, wait_serving
from tests.scale.citus_cluster import CitusCluster
from tests.scale.citus_rebalance import CLIENTS, Rebalance, run_rebalance

SCENARIO = "mixed"
PLAIN, CITUS = "postgres", "citus"
_RESULTS = Path(__file__).parent / "results"


@dataclass(slots=True)
class Backend:
    """One side of the comparison: its database, its server, its nodes' postmasters."""

    name: str
    dsn: str
    pool: asyncpg.Pool
    server: ServerProcess
    seeder: Seeder
    postmasters: dict[str, int]  # node name -> postmaster pid


def _postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split()[0])


class CitusBench(bench_main.Bench):
    """`make bench`'s harness on each backend in turn, with every node's CPU per window."""

    backends: dict[str, Backend]

    def use(self, backend: Backend) -> None:
        """Point run_once (its pool, seeder, server) at `backend`."""
        self.pool, self.dsn, self.authsvc = backend.pool, backend.dsn, backend.server
        self.seeder = backend.seeder

    async def measure(self, backend: Backend) -> Run:
        """One window of the mixed workload on `backend`, with each node's CPU over it."""
        self.use(backend)
        duration = self.args.duration

        async def nodes_window() -> dict[str, Any]:
            nodes = backend.postmasters
            before = {node: database_cpu_seconds(pid) for node, pid in nodes.items()}
            started = time.monotonic()
            await asyncio.sleep(duration)
            return {
                "cpu_s": {n: database_cpu_seconds(pid) - before[n] for n, pid in nodes.items()},
                "window_s": time.monotonic() - started,
            }

        run = await self.run_once(SCENARIO, during=nodes_window)
        calls = run["calls"]
        run["node_cpu_ms_per_call"] = {
            node: seconds / calls * 1000 if calls else None
            for node, seconds in run["during"]["cpu_s"].items()
        }
        run["database_cpu_ms_per_call"] = (
            sum(run["during"]["cpu_s"].values()) / calls * 1000 if calls else None
        )
        run["service_cpu_ms_per_call"] = run["server_cpu_s_per_1k_calls"]
        run["load_average"] = os.getloadavg()[0]
        return run


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _summary(runs: list[Run]) -> dict[str, Any]:
    """Medians over the rounds; errors summed."""
    keys = ("calls_per_s", "service_cpu_ms_per_call", "database_cpu_ms_per_call", "p50_ms",
            "p99_ms", "load_average")  # fmt: skip
    out: dict[str, Any] = {key: _median([run.get(key) for run in runs]) for key in keys}
    out["node_cpu_ms_per_call"] = {
        node: _median([run["node_cpu_ms_per_call"][node] for run in runs])
        for node in runs[0]["node_cpu_ms_per_call"]
    }
    service, database = out["service_cpu_ms_per_call"], out["database_cpu_ms_per_call"]
    out["total_cpu_ms_per_call"] = service + database if service and database else None
    out["errors"] = sum(run["error_count"] for run in runs)
    out["error_codes"] = sorted({code for run in runs for code in run["errors"]})
    return out


def _ratio(over: float | None, under: float | None) -> float | None:
    return over / under if over is not None and under else None


def _ratios(plain: dict[str, Any], citus: dict[str, Any]) -> dict[str, Any]:
    """Citus's figures over the plain server's; the coordinator's CPU per call against the
    plain server's: what the coordinator costs for the same work."""
    keys = ("calls_per_s", "service_cpu_ms_per_call", "database_cpu_ms_per_call",
            "total_cpu_ms_per_call", "p50_ms", "p99_ms")  # fmt: skip
    out = {key: _ratio(citus[key], plain[key]) for key in keys}
    coordinator = citus["node_cpu_ms_per_call"]["coordinator"]
    out["coordinator_vs_plain_database_cpu"] = _ratio(
        coordinator, plain["database_cpu_ms_per_call"]
    )
    return out


async def _compare(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    bench_args = bench_main._parse([
        "--duration", str(args.duration), "--warmup", str(args.warmup), "--runs", str(args.runs),
        "--concurrency", str(args.concurrency), "--processes", str(args.processes),
        "--server-log-level", "WARNING", "--scenarios", SCENARIO,
    ])  # fmt: skip
    plain_pg = start_embedded_postgres(work_dir / "pg")
    cluster = _cluster(work_dir)
    backends: dict[str, Backend] = {}
    servers: list[ServerProcess] = []
    bench: CitusBench | None = None
    try:
        await plain_pg.ensure_service_database()
        await cluster.start()
        citus_dsn = await cluster.create_database(DATABASE_NAME)
        password_hash = argon2.PasswordHasher().hash(bench_main.PASSWORD)
        for name, dsn, postmasters in (
            (PLAIN, plain_pg.dsn(), {"postgres": _postmaster(plain_pg.pgdata)}),
            (CITUS, citus_dsn, {n.name: _postmaster(n.pgdata) for n in cluster.nodes}),
        ):
            # Started one at a time: each migrates its database as it starts.
            server = start_authsvc(dsn, work_dir, "WARNING", name=f"authsvc-{name}")
            servers.append(server)
            await wait_serving(server.target)
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
            seeder = Seeder(pool, server.target, password_hash)
            backends[name] = Backend(name, dsn, pool, server, seeder, postmasters)
        bench = CitusBench(bench_args, backends[PLAIN].pool, backends[PLAIN].dsn, work_dir)
        bench.backends = backends
        bench.empty = start_empty_server(work_dir)  # run_once's bound; idle here
        await bench.prepare_load_processes()
        runs: dict[str, list[Run]] = {name: [] for name in backends}
        for index in range(args.runs):
            for name, backend in backends.items():
                run = await bench.measure(backend)
                runs[name].append(run)
                _progress(f"{name} {SCENARIO} {index + 1}/{args.runs}", run)
        summaries = {name: _summary(backend_runs) for name, backend_runs in runs.items()}
        for name, backend in backends.items():
            summaries[name]["warnings_logged"] = bench_main._warnings_logged(backend.server)
        return {**summaries, "citus_over_postgres": _ratios(summaries[PLAIN], summaries[CITUS])}
    except BaseException:
        for backend in backends.values():  # why it failed, before the logs go
            for line in bench_main._warnings_logged(backend.server, keep=5):
                print(f"{backend.name} server: {line}", file=sys.stderr)
        raise
    finally:
        if bench is not None:
            bench.executor.shutdown(cancel_futures=True)
            if bench.empty is not None:
                bench.empty.stop()
        for server in servers:
            server.stop()
        for backend in backends.values():
            await backend.pool.close()
        await cluster.stop()
        plain_pg.stop()


def _progress(label: str, run: Run) -> None:
    nodes = ", ".join(f"{n} {v:.3f}" for n, v in run["node_cpu_ms_per_call"].items() if v)
    print(
        f"{label}: {run['calls_per_s']:,.0f}/s, service {run['service_cpu_ms_per_call'] or 0:.3f}"
        f" ms/call, database {nodes} ms/call, errors {run['error_count']},"
        f" load {run['load_average']:.1f}",
        file=sys.stderr,
        flush=True,
    )


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_comparison(result: dict[str, Any]) -> None:
    plain, citus = result[PLAIN], result[CITUS]
    print(f"\n{SCENARIO} (medians), CPU in ms per call; database = every PostgreSQL process")
    print("| backend | calls/s | service | database | of it: per node | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in ((PLAIN, plain), (CITUS, citus)):
        nodes = ", ".join(f"{n} {_number(v)}" for n, v in s["node_cpu_ms_per_call"].items())
        print(
            f"| {name} | {_number(s['calls_per_s'], 0)} | {_number(s['service_cpu_ms_per_call'])}"
            f" | {_number(s['database_cpu_ms_per_call'])} | {nodes} | {_number(s['p50_ms'], 1)}"
            f" | {_number(s['p99_ms'], 1)} | {s['errors']} |"
        )
    ratios = result["citus_over_postgres"]
    print("citus / postgres: " + ", ".join(f"{k} {_number(v, 2)}" for k, v in ratios.items()))
    print(
        f"{result['cpus']} CPUs, shared by the load processes, both servers and every node (and"
        f" whatever else ran: load average {result['load_average_before'][0]:.1f} before):"
        " calls/s is what this machine did, not what either backend could; CPU per call is"
        " the figure to compare"
    )


def _rebalance_figures(run: Rebalance) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for call in run.failed:
        name = f"{call.outcome[0].name} {call.outcome[1]}".strip()
        outcomes[name] = outcomes.get(name, 0) + 1
    during = run.during
    return {
        "clients": CLIENTS,
        "rebalance_s": run.seconds,
        "moves": run.moves,
        "shards_on_new_worker": run.shards_on_new_worker,
        "calls": len(run.calls),
        "calls_during_rebalance": len(during),
        "failed_calls": len(run.failed),
        "failed_by_outcome": outcomes,
        "errors_logged": sorted(set(run.errors_logged)),
        "refresh_p50_ms_during": _quantile_ms(during, 0.5),
        "refresh_max_ms_during": _quantile_ms(during, 1.0),
        "sessions_before_after": [len(run.before.session_ids), len(run.after.session_ids)],
        "tokens_added_vs_rotations_answered": [
            len(run.after.token_hashes) - len(run.before.token_hashes),
            run.answered,
        ],
    }


def _quantile_ms(calls: list[Any], q: float) -> float | None:
    spans = sorted((call.ended - call.started) * 1000 for call in calls)
    return spans[min(len(spans) - 1, int(q * len(spans)))] if spans else None


def _cluster(work_dir: Path) -> CitusCluster:
    root = work_dir / "citus"
    root.mkdir()
    return CitusCluster(root)


async def _rebalance(work_dir: Path) -> dict[str, Any]:
    cluster = _cluster(work_dir)
    try:
        await cluster.start()
        dsn = await cluster.create_database(DATABASE_NAME)
        return _rebalance_figures(await run_rebalance(cluster, dsn, steady_seconds=2.0))
    finally:
        await cluster.stop()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.citus", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3, help="rounds, each backend once")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--smoke", action="store_true", help="one round of 1 s, for CI")
    parser.add_argument(
        "--rebalance", action="store_true", help="the live rebalance instead of the comparison"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.runs, args.concurrency, args.processes = 1, 0.5, 1, 8, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-citus-") as tmp:
        if args.rebalance:
            result = asyncio.run(_rebalance(Path(tmp)))
        else:
            result = asyncio.run(_compare(args, Path(tmp)))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": bench_main._git_sha(),
        "argv": sys.argv[1:] if argv is None else argv,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        **result,
    }
    if args.rebalance:
        print(json.dumps(result, indent=2))
    else:
        _print_comparison(result)
    _RESULTS.mkdir(exist_ok=True)
    kind = "rebalance" if args.rebalance else "smoke" if args.smoke else "compare"
    path = _RESULTS / f"{datetime.now(UTC):%Y-%m-%dT%H%M}-{result['git_sha']}-citus-{kind}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    if not args.rebalance and (errors := result[PLAIN]["errors"] + result[CITUS]["errors"]):
        sys.exit(f"{errors} calls failed")


if __name__ == "__main__":
    main()
