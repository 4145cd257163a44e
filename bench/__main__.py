"""`make bench`: drive the real authsvc server from separate load processes and
report every scenario next to the bound that limits it, measured in the same run.

Run: .venv/bin/python -m bench [--scenarios validate,refresh,...] [--duration 10]
     [--warmup 3] [--runs 3] [--concurrency 64] [--processes 2] [--workers 1]
     [--server-cpus 0 --load-cpus 1] [--sessions 10000,100000,1000000]
     [--half-peak] [--sweep-rows 1000000] [--memory-minutes 5] [--smoke]
     [--database-url URL] [--baseline DIR] [--telemetry] [--lineage] [--webhooks] [--pgbouncer]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypedDict

import argon2
import asyncpg

from authsvc.embedded_db import start_embedded_postgres
from authsvc.service_keys import mint_service_key
from bench import (
    crypto,
    load,
    otlp_sink,
    peer,
    report,
    revocation_propagation,
    slow_receiver,
    verify_offline,
)
from bench.pgbouncer import PgBouncer, run_pgbouncer
from bench.report import Run
from bench.seed import SeededSession, Seeder
from bench.servers import (
    ServerProcess,
    process_tree,
    start_authsvc,
    start_empty_server,
    start_otlp_sink,
    start_webhook_receiver,
    wait_serving,
    with_key_encryption_keys,
)

SCENARIOS = (
    "validate", "refresh", "refresh_keyed", "refresh_same_token", "list_sessions", "get_jwks",
    "login",
    "revoke_session", "mixed",
)  # fmt: skip
BOUNDS = ("grpc_empty", "pg_refresh", "crypto")
# Stages of their own, run after the scenarios: verify_offline in a process of its own,
# revocation_propagation with servers of its own.
STAGES = ("verify_offline", "revocation_propagation")
# better-auth beside validate and list_sessions (bench/peer.py); not in --smoke, so
# `make test` never installs its packages.
PEERS = tuple(peer.SCENARIOS)
PASSWORD = "bench password 1"
_RESULTS = Path(__file__).parent / "results"
_REVOKE_RATE_GUESS = 2500.0  # calls/s: sizes the sessions revoke_session may use up
_SERVER_POOL_MAX = 10  # authsvc's default AUTHSVC_DB_POOL_MAX_SIZE
_HALF_PEAK = ("refresh", "validate")
# --lineage: the scenarios that present refresh tokens, run with refresh lineage on and off.
# pg_refresh: its statement with the step written, and with it skipped as the server skips it.
_LINEAGE_SCENARIOS = ("refresh", "refresh_same_token", "mixed", "pg_refresh")
# --pgbouncer: the scenarios run through PgBouncer, direct without the statement cache (the
# setting's one cost without the extra hop) and direct, in turns.
_PGBOUNCER_SCENARIOS = ("refresh", "validate")
_THROUGH_PGBOUNCER = "pgbouncer"
_NO_STATEMENT_CACHE = "direct, no statement cache"
# Sessions per call slot under open-loop refresh, so a slot never refreshes one
# session twice at once even when answers are slow.
_PACED_SESSIONS = 32
_RSS_SAMPLE_EVERY = 5.0  # s, in the memory stage
_MEMORY_WARMUP = 60.0  # s: the verified-token cache and statement caches fill first
_SWEEP_LOAD_CAP = 900.0  # s: the refresh load under a sweep stops when the sweep ends
# verify_offline: tokens it cycles through, and logouts/s that keep its feed carrying news.
_VERIFIED_TOKENS = 256
_FEED_REVOCATIONS_PER_S = 50.0
# Expired sessions the sweeper has yet to mark ended (their tokens stay with the tombstone).
_EXPIRED_ROWS = """
SELECT count(*) AS sessions FROM sessions WHERE idle_expires_at <= now() AND revoked_at IS NULL
"""


def _cpus(text: str) -> tuple[int, ...]:
    return tuple(int(cpu) for cpu in text.split(",") if cpu.strip())


def _sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",") if size.strip()]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="")
    parser.add_argument(
        "--revocations", type=int, default=1000, help="revocation_propagation's revocations"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up before it, s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight, in all")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="authsvc serve --workers N, and as many empty servers",
    )
    parser.add_argument(
        "--compare-workers",
        type=int,
        default=0,
        help="then restart the servers with this many workers and run the scenarios again",
    )
    parser.add_argument(
        "--server-cpus",
        type=_cpus,
        default=(),
        help="pin servers and the embedded PostgreSQL here, e.g. 0",
    )
    parser.add_argument("--load-cpus", type=_cpus, default=(), help="pin load processes here")
    parser.add_argument(
        "--sessions",
        type=_sizes,
        default=[0],
        help="background sessions in the store; a list runs every "
        "scenario at each size, e.g. 10000,100000,1000000",
    )
    parser.add_argument(
        "--half-peak",
        action="store_true",
        help="also run refresh and validate open-loop at half their peak",
    )
    parser.add_argument(
        "--sweep-rows",
        type=int,
        default=0,
        help="seed this many expired sessions and sweep them under refresh load",
    )
    parser.add_argument(
        "--memory-minutes",
        type=float,
        default=0.0,
        help="run mixed this long and report RSS over time",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every scenario for about a second: fails on any error (CI)",
    )
    parser.add_argument("--database-url", default=os.environ.get("AUTHSVC_DATABASE_URL", ""))
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="also serve the authsvc of this source tree (e.g. `git archive main` unpacked) "
        "and run each authsvc scenario on it too, alternating runs with this checkout's",
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="also serve this checkout with metrics on, with metrics and tracing on (to an "
        "OTLP sink that drops), and with tracing sampling 10%%, and run each authsvc scenario "
        "on all four in turns",
    )
    parser.add_argument(
        "--lineage",
        action="store_true",
        help="also serve this checkout with AUTHSVC_REFRESH_LINEAGE=false and run refresh, "
        "refresh_same_token and mixed on both in turns (pg_refresh with and without its "
        "lineage step): refresh lineage's cost",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="also serve this checkout with webhooks on, every Login and Refresh an event, "
        "to a receiver that answers after 5 s, and run each authsvc scenario on both in turns",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="also serve this checkout through a PgBouncer in transaction pooling mode "
        "(AUTHSVC_DATABASE_POOLER=pgbouncer-transaction), and direct with that setting (no "
        "statement cache), and run refresh and validate on all three in turns",
    )
    parser.add_argument("--server-log-level", default="INFO")
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy the servers' logs to bench/results/"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.runs = 1.0, 0.5, 1
        args.concurrency, args.processes = 8, 1
        args.revocations = 20
    default = SCENARIOS + BOUNDS + STAGES + (() if args.smoke else PEERS)
    names = [name.strip() for name in (args.scenarios or ",".join(default)).split(",")]
    names = [name for name in names if name]
    unknown = sorted(set(names) - set(SCENARIOS + BOUNDS + STAGES + PEERS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    args.scenarios = names
    if args.concurrency < args.processes:
        parser.error("--concurrency must be at least --processes")
    if bool(args.server_cpus) != bool(args.load_cpus):
        parser.error("--server-cpus and --load-cpus go together")
    return args


class _Variant(TypedDict, total=False):
    """What one server of a side-by-side comparison differs in (run_once's arguments)."""

    telemetry: str
    pooled: str


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        pool: asyncpg.Pool,
        dsn: str,
        work_dir: Path,
        service_key: str = "",
    ) -> None:
        self.args = args
        self.service_key = service_key
        self.work_dir = work_dir
        self.pool = pool
        self.dsn = dsn
        self.authsvc: ServerProcess | None = None
        self.baseline: ServerProcess | None = None
        # --telemetry: this checkout again, with telemetry on, by what is on.
        self.telemetry: dict[str, ServerProcess] = {}
        self.otlp_sink: ServerProcess | None = None
        # --lineage: this checkout again, with refresh lineage off.
        self.lineage_off: ServerProcess | None = None
        # --pgbouncer: this checkout again, through PgBouncer and direct without the
        # statement cache, by variant (_THROUGH_PGBOUNCER, _NO_STATEMENT_CACHE).
        self.pooled: dict[str, ServerProcess] = {}
        # --webhooks: the endpoints their servers post to (the servers join self.telemetry).
        self.webhook_receivers: dict[str, ServerProcess] = {}
        self.empty: ServerProcess | None = None
        self.peer: ServerProcess | None = None
        # Why the peer could not run, if it could not.
        self.peer_unavailable = ""
        self.seeder: Seeder | None = None
        self.executor = ProcessPoolExecutor(args.processes, mp_context=get_context("spawn"))

    async def prepare_load_processes(self) -> None:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self.executor, load.warm_up) for _ in range(self.args.processes)
        ]
        await asyncio.gather(*futures)

    async def slots_for(self, scenario: str, window: float, rate: float) -> list[load.Slot]:
        """Fresh seeded state for one run of `scenario`: one dict per call in flight."""
        assert self.seeder is not None
        seeder, concurrency = self.seeder, self.args.concurrency
        if scenario in ("grpc_empty", "get_jwks"):
            return [{} for _ in range(concurrency)]
        if scenario == "peer_get_session":
            # As validate: eight users with one session each per call in flight.
            cookies = [mine[0] for mine in await peer.seed(self.pool, concurrency * 8, 1)]
            return [{"cookies": cookies[i::concurrency]} for i in range(concurrency)]
        if scenario == "peer_list_sessions":
            # As list_sessions: one user with 20 sessions per call in flight.
            cookies = [mine[0] for mine in await peer.seed(self.pool, concurrency, 20)]
            return [{"cookie": cookie} for cookie in cookies]
        if scenario in ("refresh", "refresh_keyed", "pg_refresh"):
            users = await seeder.users_with_sessions(concurrency, _PACED_SESSIONS if rate else 1)
            return [{"refresh_tokens": [s.refresh_token for s in mine]} for mine in users]
        if scenario == "refresh_same_token":
            users = await seeder.users_with_sessions(self.args.processes, 1)
            return [{"refresh_token": mine[0].refresh_token} for mine in users]
        if scenario == "validate":
            users = await seeder.users_with_sessions(concurrency * 8, 1)
            sessions = [mine[0] for mine in users]
            await seeder.mint_access_tokens(sessions)
            return [
                {"access_tokens": [s.access_token for s in sessions[i::concurrency]]}
                for i in range(concurrency)
            ]
        if scenario == "list_sessions":
            users = await seeder.users_with_sessions(concurrency, 20)
            await seeder.mint_access_tokens([mine[0] for mine in users])
            return [{"access_token": mine[0].access_token} for mine in users]
        if scenario == "login":
            users = await seeder.users_with_sessions(concurrency * 4, 1)
            return [{"emails": _emails(users[i::concurrency])} for i in range(concurrency)]
        if scenario == "revoke_session":
            per_slot = math.ceil(_REVOKE_RATE_GUESS * window / concurrency) + 1
            users = await seeder.users_with_sessions(concurrency, per_slot + 1)
            await seeder.mint_access_tokens([mine[0] for mine in users])
            return [
                {
                    "access_token": mine[0].access_token,
                    "session_ids": [str(s.session_id) for s in mine[1:]],
                }
                for mine in users
            ]
        if scenario == "mixed":
            spares = math.ceil(0.01 * _REVOKE_RATE_GUESS * window / concurrency) + 2
            users = await seeder.users_with_sessions(concurrency, 20 + spares)
            await seeder.mint_access_tokens([mine[0] for mine in users])
            return [
                {
                    "refresh_token": mine[0].refresh_token,
                    "access_token": mine[0].access_token,
                    "email": mine[0].email,
                    "spares": [s.refresh_token for s in mine[20:]],
                    "seed": index,
                }
                for index, mine in enumerate(users)
            ]
        raise ValueError(scenario)

    async def run_once(
        self,
        scenario: str,
        *,
        duration: float | None = None,
        rate: float = 0.0,
        during: Callable[[], Coroutine[Any, Any, Any]] | None = None,
        rss_every: float = 0.0,
        warmup: float | None = None,
        on_baseline: bool = False,
        telemetry: str = "",
        lineage_off: bool = False,
        pooled: str = "",
    ) -> Run:
        """One warm-up and measured window of `scenario`.

        `rate`: calls/s offered open-loop instead of as fast as answers come.
        `during`: started when the window opens; the window closes when it ends
        (its result is kept under "during"). `rss_every`: keep RSS samples.
        `on_baseline`: against the --baseline server instead of this checkout's.
        `telemetry`: against this checkout's server with that telemetry on (--telemetry).
        `lineage_off`: against this checkout's server with refresh lineage off (--lineage).
        `pooled`: against this checkout's server of that --pgbouncer variant.
        """
        authsvc = self.baseline if on_baseline else self.authsvc
        if telemetry:
            authsvc = self.telemetry[telemetry]
        if lineage_off and scenario != "pg_refresh":
            authsvc = self.lineage_off
        if pooled:
            authsvc = self.pooled[pooled]
        assert authsvc is not None
        assert self.empty is not None
        args = self.args
        duration = args.duration if duration is None else duration
        warmup = args.warmup if warmup is None else warmup
        slots = await self.slots_for(scenario, warmup + duration, rate)
        if lineage_off and scenario == "pg_refresh":
            slots = [{**slot, "lineage": False} for slot in slots]
        server = {"grpc_empty": self.empty, "pg_refresh": None}.get(scenario, authsvc)
        if scenario in PEERS:
            server = self.peer
        assert server is not None or scenario == "pg_refresh"
        target = (authsvc if server is None else server).target
        start_at = time.monotonic() + 1.0
        stop_file = self.work_dir / f"stop-{time.monotonic_ns()}" if during else None
        specs = [
            load.LoadSpec(
                scenario=scenario,
                target=target,
                dsn=self.dsn,
                start_at=start_at,
                warmup=warmup,
                duration=duration,
                slots=slots[index :: args.processes],
                pg_pool_size=max(1, math.ceil(_SERVER_POOL_MAX / args.processes)),
                password=PASSWORD,
                rate=rate / args.processes,
                cpus=args.load_cpus,
                stop_file=str(stop_file or ""),
            )
            for index in range(args.processes)
        ]
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self.executor, load.run_load, spec) for spec in specs]
        window_start = start_at + warmup
        window_end = window_start + duration
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        cpu_before = server.cpu_seconds() if server else 0.0
        peak_rss, samples = 0, []
        stage: asyncio.Task[Any] | None = asyncio.create_task(during()) if during else None
        next_sample = window_start
        while not stage.done() if stage else time.monotonic() < window_end:
            if server:
                rss = server.rss_bytes()
                peak_rss = max(peak_rss, rss)
                if rss_every and time.monotonic() >= next_sample:
                    samples.append((round(time.monotonic() - window_start, 1), rss / 2**20))
                    next_sample += rss_every
            if stage:
                await asyncio.wait([stage], timeout=0.25)
            else:
                await asyncio.sleep(min(0.25, max(0.0, window_end - time.monotonic())))
        during_result: Any = None
        if stage is not None and stop_file is not None:
            during_result = await stage
            window_end = time.monotonic()
            stop_file.touch()
        if server and rss_every:
            samples.append((round(time.monotonic() - window_start, 1), server.rss_bytes() / 2**20))
        cpu_used = server.cpu_seconds() - cpu_before if server else 0.0
        results = await asyncio.gather(*futures)
        if stop_file is not None:
            stop_file.unlink(missing_ok=True)
        window = window_end - window_start
        latencies = sorted(x for result in results for x in result.latencies)
        codes: Counter[str] = Counter()
        for result in results:
            codes.update(result.codes)
        calls = len(latencies)
        errors = {code: n for code, n in sorted(codes.items()) if code != load.OK}
        return {
            "calls": calls,
            "window_s": window,
            "calls_per_s": calls / window,
            "p50_ms": report.quantile(latencies, 0.50) * 1000,
            "p90_ms": report.quantile(latencies, 0.90) * 1000,
            "p99_ms": report.quantile(latencies, 0.99) * 1000,
            "errors": errors,
            "error_count": sum(errors.values()),
            "server_cpu_s_per_1k_calls": (cpu_used / calls * 1000) if server and calls else None,
            "server_peak_rss_mib": peak_rss / 2**20 if server else None,
            "load_start_late_s": max(result.late_by for result in results),
            **({"rss_mib": samples} if samples else {}),
            **({"during": during_result} if during is not None else {}),
        }

    async def runs_of(self, scenario: str, *, rate: float = 0.0, label: str = "") -> list[Run]:
        runs = []
        for index in range(self.args.runs):
            run = await self.run_once(scenario, rate=rate)
            runs.append(run)
            _progress(f"{label or scenario} run {index + 1}/{self.args.runs}", run)
        return runs

    async def verify_offline_once(self) -> Run:
        """One window of the subscribed verifier in its own process, while logouts of
        other sessions flow through the feed at _FEED_REVOCATIONS_PER_S."""
        assert self.seeder is not None
        assert self.authsvc is not None
        args = self.args
        verified = [mine[0] for mine in await self.seeder.users_with_sessions(_VERIFIED_TOKENS, 1)]
        spares_needed = math.ceil(_FEED_REVOCATIONS_PER_S * (args.warmup + args.duration)) + 1
        spares = [mine[0] for mine in await self.seeder.users_with_sessions(spares_needed, 1)]
        await self.seeder.mint_access_tokens(verified + spares)
        spec = verify_offline.VerifySpec(
            target=self.authsvc.target,
            service_key=self.service_key,
            access_tokens=[s.access_token for s in verified],
            # Time to connect and hear the first heartbeat before the warm-up begins.
            start_at=time.monotonic() + 3.0,
            warmup=args.warmup,
            duration=args.duration,
            cpus=args.load_cpus,
        )
        loop = asyncio.get_running_loop()
        measured = loop.run_in_executor(self.executor, verify_offline.run, spec)
        await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
        await verify_offline.log_out_at(
            self.authsvc.target,
            [s.access_token for s in spares],
            _FEED_REVOCATIONS_PER_S,
            until=measured,
        )
        return {**await measured, "revocations_offered_per_s": _FEED_REVOCATIONS_PER_S}

    async def verify_offline(self) -> dict[str, Any]:
        runs = []
        for index in range(self.args.runs):
            run = await self.verify_offline_once()
            runs.append(run)
            print(
                f"verify_offline run {index + 1}/{self.args.runs}: "
                f"{run['verifies_per_s']:.0f} verifies/s, p99 {run['p99_us']:.0f} us, "
                f"errors {run['errors'] or 0}",
                file=sys.stderr,
                flush=True,
            )
        figures = (
            "verifies_per_s",
            "verifies_per_cpu_s",
            "p50_us",
            "p99_us",
            "unsubscribed_verifies_per_cpu_s",
            "unsubscribed_p50_us",
            "subscription_cpu_us_per_verify",
        )
        out: dict[str, Any] = {
            name: {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
            for name in figures
            if (values := [run[name] for run in runs if run[name] is not None])
        }
        errors: Counter[str] = Counter()
        for run in runs:
            errors.update(run["errors"])
        out["errors"] = dict(sorted(errors.items()))
        out["revocations_offered_per_s"] = _FEED_REVOCATIONS_PER_S
        out["runs"] = runs
        return out

    async def runs_with_baseline(self, scenario: str, label: str) -> tuple[list[Run], list[Run]]:
        """Runs of `scenario` on this checkout's server and on the baseline's, in turns
        (baseline first, then this one), so both see the same drift of a shared machine."""
        runs, baseline_runs = [], []
        for index in range(self.args.runs):
            run = await self.run_once(scenario, on_baseline=True)
            baseline_runs.append(run)
            _progress(f"{label} (baseline) run {index + 1}/{self.args.runs}", run)
            run = await self.run_once(scenario)
            runs.append(run)
            _progress(f"{label} run {index + 1}/{self.args.runs}", run)
        return runs, baseline_runs

    async def _runs_in_turns(
        self, scenario: str, label: str, variants: dict[str, _Variant]
    ) -> dict[str, list[Run]]:
        """Runs of `scenario` on each variant in turns (`variants`: name -> run_once's
        keyword arguments), so every variant sees the same drift of a shared machine."""
        runs: dict[str, list[Run]] = {variant: [] for variant in variants}
        for index in range(self.args.runs):
            for variant, variant_runs in runs.items():
                run = await self.run_once(scenario, **variants[variant])
                variant_runs.append(run)
                name = f"{label} ({variant})" if variant else label
                _progress(f"{name} run {index + 1}/{self.args.runs}", run)
        return runs

    async def runs_with_telemetry(self, scenario: str, label: str) -> dict[str, list[Run]]:
        """Runs of `scenario` with telemetry off, then on each --telemetry server, in turns.
        Keyed by variant ("" off)."""
        variants: dict[str, _Variant] = {"": {}, **{n: {"telemetry": n} for n in self.telemetry}}
        return await self._runs_in_turns(scenario, label, variants)

    async def runs_with_lineage_off(self, scenario: str, label: str) -> tuple[list[Run], list[Run]]:
        """Runs of `scenario` with refresh lineage off, then on, in turns, so both see the
        same drift of a shared machine (and the same growing tables)."""
        runs, off_runs = [], []
        for index in range(self.args.runs):
            run = await self.run_once(scenario, lineage_off=True)
            off_runs.append(run)
            _progress(f"{label} (lineage off) run {index + 1}/{self.args.runs}", run)
            run = await self.run_once(scenario)
            runs.append(run)
            _progress(f"{label} run {index + 1}/{self.args.runs}", run)
        return runs, off_runs

    async def runs_pooled(self, scenario: str, label: str) -> dict[str, list[Run]]:
        """Runs of `scenario` on each --pgbouncer variant, then direct, in turns. Keyed by
        variant ("" direct)."""
        variants: dict[str, _Variant] = {**{n: {"pooled": n} for n in self.pooled}, "": {}}
        return await self._runs_in_turns(scenario, label, variants)

    async def start_telemetry(self) -> None:
        """The --telemetry servers: metrics on; metrics and tracing on, to a sink that drops;
        the same with one trace in ten sampled."""
        args, work_dir = self.args, self.work_dir
        self.otlp_sink = start_otlp_sink(work_dir, cpus=args.load_cpus)
        metrics = {"AUTHSVC_METRICS": "true", "AUTHSVC_HTTP_PORT": "0"}
        traced = {**metrics, "AUTHSVC_OTLP_ENDPOINT": f"http://{self.otlp_sink.target}"}
        sampled = {
            **traced,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }
        variants = (metrics, traced, sampled)
        for index, (name, settings) in enumerate(
            zip(report.TELEMETRY_VARIANTS, variants, strict=True)
        ):
            self.telemetry[name] = start_authsvc(
                self.dsn,
                work_dir,
                args.server_log_level,
                workers=args.workers,
                cpus=args.server_cpus,
                name=f"authsvc-telemetry-{index + 1}",
                settings=settings,
            )
        for server in self.telemetry.values():
            await wait_serving(server.target)

    async def start_webhooks(self) -> None:
        """The --webhooks servers: this checkout, every Login and Refresh an event (an idle
        threshold of 1 ms), one delivering to a receiver that answers at once, one to a
        receiver that answers after 5 s: what writing events costs, and what a slow
        endpoint adds (nothing on an RPC's path waits on it). Variants beside the
        --telemetry ones, run in turns with them."""
        args, work_dir = self.args, self.work_dir
        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        for index, (variant, delay) in enumerate(
            zip(report.WEBHOOK_VARIANTS, (0.0, 5.0), strict=True)
        ):
            receiver = start_webhook_receiver(
                work_dir, delay=delay, name=f"webhook-receiver-{index + 1}", cpus=args.load_cpus
            )
            self.webhook_receivers[variant] = receiver
            self.telemetry[variant] = start_authsvc(
                self.dsn,
                work_dir,
                args.server_log_level,
                workers=args.workers,
                cpus=args.server_cpus,
                name=f"authsvc-webhooks-{index + 1}",
                settings={
                    "AUTHSVC_WEBHOOK_URLS": f"http://{receiver.target}/hooks",
                    "AUTHSVC_WEBHOOK_SECRET": secret,
                    "AUTHSVC_WEBHOOK_IDLE_THRESHOLD": "1ms",
                },
            )
        for variant in report.WEBHOOK_VARIANTS:
            await wait_serving(self.telemetry[variant].target)

    def stop_webhooks(self) -> dict[str, int | None] | None:
        """Stop the receivers (after the servers); the requests each received, None without
        --webhooks."""
        if not self.webhook_receivers:
            return None
        received = {}
        for variant, receiver in self.webhook_receivers.items():
            receiver.stop()
            log = receiver.log_path.read_text(errors="replace")
            received[variant] = slow_receiver.received_requests(log)
        return received

    def stop_telemetry(self) -> int | None:
        """Stop the --telemetry servers (flushing their spans), then the sink; the spans it
        received, None without --telemetry."""
        for server in self.telemetry.values():
            server.stop()
        if self.otlp_sink is None:
            return None
        self.otlp_sink.stop()
        return otlp_sink.received_spans(self.otlp_sink.log_path.read_text(errors="replace"))

    def start_peer(self) -> bool:
        """Start the better-auth peer if it is not running; False (saying why) if it cannot."""
        if self.peer is None and not self.peer_unavailable:
            try:
                self.peer = peer.start(self.dsn, self.work_dir, self.args.server_cpus)
            except (peer.PeerUnavailable, RuntimeError, OSError) as exc:
                self.peer_unavailable = str(exc)
                print(f"better-auth peer unavailable: {exc}", file=sys.stderr)
        return self.peer is not None

    async def half_peak(self, summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Refresh and validate offered half their measured peak, open loop; and
        refresh's SQL alone at that same rate, the latency the database allows."""
        out: dict[str, Any] = {}
        for scenario in _HALF_PEAK:
            if scenario not in summaries:
                continue
            rate = summaries[scenario]["calls_per_s"]["median"] / 2
            runs = await self.runs_of(scenario, rate=rate, label=f"{scenario} at half peak")
            out[scenario] = {"rate_per_s": rate, **report.summary(runs)}
            if scenario == "refresh":
                label = "pg_refresh at refresh's half peak"
                runs = await self.runs_of("pg_refresh", rate=rate, label=label)
                out["pg_refresh"] = {"rate_per_s": rate, **report.summary(runs)}
        return out

    async def sweep_under_load(self, rows: int, peak: float | None) -> dict[str, Any]:
        """`authsvc sweep` marking `rows` expired sessions ended (tombstones; their
        tokens stay until the retention) while refresh is offered half its peak, open
        loop; refresh p99 during the sweep against the same load just before it."""
        assert self.seeder is not None
        if peak is None:
            peak = (await self.run_once("refresh"))["calls_per_s"]
        rate = peak / 2
        baseline = await self.run_once("refresh", rate=rate)
        _progress("refresh at half peak, before the sweep", baseline)
        await self.seeder.expired_sessions(rows)
        expired = await _expired_rows(self.pool)

        async def sweep() -> float:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "authsvc", "sweep",
                env=with_key_encryption_keys({**os.environ, "AUTHSVC_DATABASE_URL": self.dsn}),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"authsvc sweep failed:\n{output.decode(errors='replace')}")
            return time.monotonic() - started

        under = await self.run_once("refresh", duration=_SWEEP_LOAD_CAP, rate=rate, during=sweep)
        _progress("refresh at half peak, during the sweep", under)
        left = await _expired_rows(self.pool)
        deleted = {table: expired[table] - left[table] for table in expired}
        seconds = float(under["during"])
        return {
            "rows_seeded": rows,
            "rows_swept": sum(deleted.values()),
            "swept_by_table": deleted,
            "seconds": seconds,
            "rows_per_s": sum(deleted.values()) / seconds,
            "refresh_rate_offered_per_s": rate,
            "baseline_p99_ms": baseline["p99_ms"],
            "refresh_p99_ms": under["p99_ms"],
            "p99_ratio": under["p99_ms"] / baseline["p99_ms"],
            "errors": {**baseline["errors"], **under["errors"]},
        }

    async def memory(self, minutes: float) -> dict[str, Any]:
        """RSS over `minutes` of mixed, after a minute's warm-up (caches fill).

        Each login's argon2id takes 64 MiB for the hash and gives it back, so
        RSS swings by that much from one sample to the next; a leak shows as a
        rising floor (least RSS in a minute) or peak (most), so both are
        compared between the first and the last minute.
        """
        run = await self.run_once(
            "mixed", duration=minutes * 60, rss_every=_RSS_SAMPLE_EVERY, warmup=_MEMORY_WARMUP
        )
        _progress("mixed, memory run", run)
        samples = run["rss_mib"]
        minutes_seen = max(1, math.ceil(samples[-1][0] / 60))
        per_minute = [
            [mib for at, mib in samples if index * 60 <= at < (index + 1) * 60]
            for index in range(minutes_seen)
        ]
        per_minute = [values for values in per_minute if values]
        floors = [min(values) for values in per_minute]
        peaks = [max(values) for values in per_minute]
        return {
            "seconds": minutes * 60,
            "warmup_s": _MEMORY_WARMUP,
            "floor_mib_by_minute": floors,
            "peak_mib_by_minute": peaks,
            "floor_change": floors[-1] / floors[0] - 1,
            "peak_change": peaks[-1] / peaks[0] - 1,
            "samples_mib": samples,
            "calls_per_s": run["calls_per_s"],
            "errors": run["errors"],
        }


def _progress(what: str, run: Run) -> None:
    print(
        f"{what}: {run['calls_per_s']:.1f} calls/s, p99 {run['p99_ms']:.1f} ms, "
        f"errors {run['errors'] or 0}",
        file=sys.stderr,
        flush=True,
    )


async def _expired_rows(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows the sweeper is due to work on: expired sessions to mark ended."""
    row = await pool.fetchrow(_EXPIRED_ROWS)
    assert row is not None
    return {"sessions": row["sessions"]}


def _emails(users: list[list[SeededSession]]) -> list[str]:
    return [mine[0].email for mine in users]


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "nogit"
    return out.stdout.strip()


def _git_dirty() -> bool:
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(out.stdout.strip())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


async def _bench(args: argparse.Namespace, work_dir: Path, dsn: str) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    service_key, service_key_entry = mint_service_key("bench")
    bench = Bench(args, pool, dsn, work_dir, service_key)
    stack = contextlib.ExitStack()
    try:
        bench.authsvc = start_authsvc(
            dsn,
            work_dir,
            args.server_log_level,
            workers=args.workers,
            cpus=args.server_cpus,
            service_keys=service_key_entry,
        )
        bench.empty = start_empty_server(work_dir, workers=args.workers, cpus=args.server_cpus)
        await wait_serving(bench.authsvc.target)
        if args.baseline is not None:
            bench.baseline = start_authsvc(
                dsn,
                work_dir,
                args.server_log_level,
                workers=args.workers,
                cpus=args.server_cpus,
                source=args.baseline,
            )
            await wait_serving(bench.baseline.target)
        if args.telemetry:
            await bench.start_telemetry()
        if args.lineage:
            bench.lineage_off = start_authsvc(
                dsn,
                work_dir,
                args.server_log_level,
                workers=args.workers,
                cpus=args.server_cpus,
                name="authsvc-lineage-off",
                settings={"AUTHSVC_REFRESH_LINEAGE": "false"},
            )
            await wait_serving(bench.lineage_off.target)
        if args.webhooks:
            await bench.start_webhooks()
        if args.pgbouncer:
            bouncer = stack.enter_context(_pgbouncer(dsn))
            pooler = {
                "AUTHSVC_DATABASE_POOLER": "pgbouncer-transaction",
                "AUTHSVC_LISTEN_DATABASE_URL": dsn,
            }
            for variant, name, url in (
                (_THROUGH_PGBOUNCER, "authsvc-pgbouncer", bouncer.dsn_through(dsn)),
                (_NO_STATEMENT_CACHE, "authsvc-no-statement-cache", dsn),
            ):
                bench.pooled[variant] = start_authsvc(
                    url,
                    work_dir,
                    args.server_log_level,
                    workers=args.workers,
                    cpus=args.server_cpus,
                    name=name,
                    settings=pooler,
                )
                await wait_serving(bench.pooled[variant].target)
        bench.seeder = Seeder(pool, bench.authsvc.target, argon2.PasswordHasher().hash(PASSWORD))
        await bench.prepare_load_processes()
        by_size: dict[int, dict[str, dict[str, Any]]] = {}
        all_runs: dict[str, list[Run]] = {}
        for size in args.sessions:
            if size:
                print(f"store: topping up to {size} background sessions", file=sys.stderr)
                await bench.seeder.background_sessions(size)
            summaries: dict[str, dict[str, Any]] = {}
            for scenario in args.scenarios:
                if (
                    scenario == "crypto"
                    or scenario in STAGES
                    or (scenario in PEERS and not bench.start_peer())
                ):
                    continue
                label = f"{scenario} ({size} sessions)" if len(args.sessions) > 1 else scenario
                if bench.telemetry and scenario in SCENARIOS:
                    by_variant = await bench.runs_with_telemetry(scenario, label)
                    runs = by_variant.pop("")
                    # First: the table reads off, then each variant.
                    summaries[scenario] = report.summary(runs)
                    for variant, variant_runs in by_variant.items():
                        all_runs[f"{label} ({variant})"] = variant_runs
                        summaries[f"{scenario} ({variant})"] = report.summary(variant_runs)
                elif bench.pooled and scenario in _PGBOUNCER_SCENARIOS:
                    by_variant = await bench.runs_pooled(scenario, label)
                    runs = by_variant.pop("")
                    for variant, variant_runs in by_variant.items():
                        all_runs[f"{label} ({variant})"] = variant_runs
                        summaries[f"{scenario} ({variant})"] = report.summary(variant_runs)
                elif bench.lineage_off is not None and scenario in _LINEAGE_SCENARIOS:
                    runs, off_runs = await bench.runs_with_lineage_off(scenario, label)
                    all_runs[f"{label} (lineage off)"] = off_runs
                    summaries[f"{scenario} (lineage off)"] = report.summary(off_runs)
                elif bench.baseline is not None and scenario in SCENARIOS:
                    runs, baseline_runs = await bench.runs_with_baseline(scenario, label)
                    all_runs[f"{label} (baseline)"] = baseline_runs
                    summaries[f"{scenario} (baseline)"] = report.summary(baseline_runs)
                else:
                    runs = await bench.runs_of(scenario, label=label)
                all_runs[label] = runs
                summaries[scenario] = report.summary(runs)
            by_size[size] = summaries
        summaries = by_size[args.sessions[0]]
        half_peak = await bench.half_peak(summaries) if args.half_peak else {}
        sweep = {}
        if args.sweep_rows:
            peak = summaries.get("refresh", {}).get("calls_per_s", {}).get("median")
            sweep = await bench.sweep_under_load(args.sweep_rows, peak)
        memory = await bench.memory(args.memory_minutes) if args.memory_minutes else {}
        verified = await bench.verify_offline() if "verify_offline" in args.scenarios else {}
        hwm = bench.authsvc.hwm_bytes() / 2**20
        compared: dict[str, Any] = {}
        if args.compare_workers:
            compared = await _compare_workers(bench, work_dir, summaries, all_runs)
        crypto_summary = _crypto(args) if "crypto" in args.scenarios else {}
        propagation = {}
        if "revocation_propagation" in args.scenarios:
            propagation = await revocation_propagation.measure(
                dsn, work_dir, args.server_log_level, revocations=args.revocations
            )
    finally:
        exported_spans = bench.stop_telemetry()
        received_requests = bench.stop_webhooks()
        warnings = _warnings_logged(bench.authsvc) + _warnings_logged(bench.baseline)
        warnings += _warnings_logged(bench.lineage_off)
        for variant_server in bench.pooled.values():
            warnings += _warnings_logged(variant_server)
        for variant_server in bench.telemetry.values():
            warnings += _warnings_logged(variant_server)
        bench.executor.shutdown(cancel_futures=True)
        servers = (bench.authsvc, bench.baseline, bench.lineage_off, *bench.pooled.values())
        for server in (*servers, bench.empty, bench.peer):
            if server is not None:
                server.stop()
        await pool.close()
        stack.close()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_sha": _git_sha(),
        "git_dirty": _git_dirty(),
        "machine": {"cpu_model": _cpu_model(), "cpus": os.cpu_count(), "python": sys.version},
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "runs": args.runs,
            "concurrency": args.concurrency,
            "processes": args.processes,
            "workers": args.workers,
            "compare_workers": args.compare_workers,
            "server_cpus": list(args.server_cpus),
            "load_cpus": list(args.load_cpus),
            "sessions": args.sessions,
            "database": "external" if args.database_url else "embedded",
            "server_log_level": args.server_log_level,
            "baseline": str(args.baseline or ""),
            "telemetry": args.telemetry,
            "lineage": args.lineage,
            "webhooks": args.webhooks,
            "pgbouncer": args.pgbouncer,
            "mixed_blend": {**dict(_blend()), load.MIX_LAST: 0.01},
        },
        "server_vm_hwm_mib": hwm,
        "server_warnings": warnings,
        "scenarios": summaries,
        "runs": all_runs,
        "crypto": crypto_summary,
        "ratios": report.ratios(summaries, crypto_summary),
        "cpu_ratios": report.cpu_ratios(summaries),
        "telemetry": report.telemetry_costs(summaries, exported_spans),
        "lineage": report.lineage_costs(summaries),
        "pgbouncer": report.pooler_costs(summaries, (_THROUGH_PGBOUNCER, _NO_STATEMENT_CACHE)),
        "webhooks": report.webhook_costs(summaries, received_requests),
        "peer": {
            "name": "better-auth",
            "unavailable": bench.peer_unavailable,
            "ratios": report.peer_ratios(summaries, peer.SCENARIOS),
        },
        "half_peak": half_peak,
        "scaling": _scaling(by_size) if len(by_size) > 1 else {},
        "sweep": sweep,
        "memory": memory,
        "verify_offline": verified,
        "workers": compared,
        "revocation_propagation": propagation,
    }


async def _compare_workers(
    bench: Bench,
    work_dir: Path,
    summaries: dict[str, dict[str, Any]],
    all_runs: dict[str, list[Run]],
) -> dict[str, Any]:
    """The same scenarios again on servers restarted with --compare-workers N."""
    args = bench.args
    for server in (bench.authsvc, bench.empty):
        if server is not None:
            server.stop()
    workers = args.compare_workers
    bench.authsvc = start_authsvc(
        bench.dsn, work_dir, args.server_log_level, workers=workers, cpus=args.server_cpus
    )
    bench.empty = start_empty_server(work_dir, workers=workers, cpus=args.server_cpus)
    await wait_serving(bench.authsvc.target)
    bench.seeder = Seeder(bench.pool, bench.authsvc.target, argon2.PasswordHasher().hash(PASSWORD))
    other: dict[str, dict[str, Any]] = {}
    for scenario in args.scenarios:
        if scenario in summaries:
            label = f"{scenario} ({workers} workers)"
            runs = await bench.runs_of(scenario, label=label)
            all_runs[label] = runs
            other[scenario] = report.summary(runs)
    names = [name for name in summaries if name in other]
    return {
        "workers": [args.workers, workers],
        "calls_per_s": {
            name: {
                str(args.workers): summaries[name]["calls_per_s"]["median"],
                str(workers): other[name]["calls_per_s"]["median"],
            }
            for name in names
        },
        "scenarios": other,
        "ratios": report.ratios(other, {}),
    }


def _warnings_logged(server: ServerProcess | None, keep: int = 20) -> list[str]:
    """The server's last WARNING and ERROR log lines: why a run had errors."""
    if server is None:
        return []
    lines = server.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if '"level": "WARNING"' in line or '"level": "ERROR"' in line][
        -keep:
    ]


@contextlib.contextmanager
def _pgbouncer(dsn: str) -> Iterator[PgBouncer]:
    """PgBouncer in front of the bench's database, with as many server connections as one
    server's pool (so the pool, not PgBouncer, bounds the server's concurrency either way).
    Its files go in a directory of their own under /tmp, which pgbouncer's user can reach."""
    with (
        tempfile.TemporaryDirectory(prefix="authsvc-bench-pgbouncer-") as workdir,
        run_pgbouncer(dsn, Path(workdir), pool_size=_SERVER_POOL_MAX) as bouncer,
    ):
        yield bouncer


def _crypto(args: argparse.Namespace) -> dict[str, Any]:
    cores = len(args.server_cpus) or os.cpu_count() or 1
    measured = [crypto.measure(1.0, cores) for _ in range(args.runs)]
    return {
        scope: {
            name: {
                "median": statistics.median(m[scope][name] for m in measured),
                "min": min(m[scope][name] for m in measured),
                "max": max(m[scope][name] for m in measured),
            }
            for name in measured[0][scope]
        }
        for scope in ("one_core", "all_cores")
    }


def _scaling(by_size: dict[int, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    sizes = sorted(by_size)
    names = [name for name in by_size[sizes[0]] if all(name in by_size[s] for s in sizes)]
    rates = {
        name: {str(size): by_size[size][name]["calls_per_s"]["median"] for size in sizes}
        for name in names
    }
    return {
        "sizes": sizes,
        "calls_per_s": rates,
        "ratio": {name: rates[name][str(sizes[-1])] / rates[name][str(sizes[0])] for name in names},
        "by_size": {str(size): by_size[size] for size in sizes},
    }


def _blend() -> list[tuple[str, float]]:
    shares, previous = [], 0.0
    for name, threshold in load.MIX:
        shares.append((name, round(threshold - previous, 4)))
        previous = threshold
    return shares


def _label(args: argparse.Namespace) -> str:
    parts = ["smoke"] if args.smoke else []
    if args.workers != 1:
        parts.append(f"w{args.workers}")
    if args.compare_workers:
        parts.append(f"vs-w{args.compare_workers}")
    if args.server_cpus:
        parts.append("pinned")
    if len(args.sessions) > 1 or args.sessions[0]:
        parts.append("sessions-" + "-".join(map(str, args.sessions)))
    if args.sweep_rows:
        parts.append(f"sweep{args.sweep_rows}")
    if args.memory_minutes:
        parts.append(f"memory{args.memory_minutes:g}m")
    if args.telemetry:
        parts.append("telemetry")
    return "".join(f"-{part}" for part in parts)


def _pin_postgres(pgdata: Path, cpus: tuple[int, ...]) -> None:
    """The database is part of the server side: its postmaster and every
    process it has (later backends inherit the postmaster's CPUs)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    for pid in process_tree([postmaster]):
        os.sched_setaffinity(pid, cpus)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        work_dir = Path(tmp)
        embedded = None
        if args.database_url:
            dsn = args.database_url
        else:
            embedded = start_embedded_postgres(work_dir / "pg")
            if args.server_cpus:
                _pin_postgres(embedded.pgdata, args.server_cpus)
            asyncio.run(embedded.ensure_service_database())
            dsn = embedded.dsn()
        try:
            result = asyncio.run(_bench(args, work_dir, dsn))
        finally:
            if embedded is not None:
                embedded.stop()
            if args.keep_logs:
                kept = _RESULTS / f"logs-{datetime.now(UTC):%Y%m%dT%H%M%S}"
                kept.mkdir(parents=True)
                for log in work_dir.glob("*.log"):
                    shutil.copy(log, kept / log.name)
                print(f"server logs in {kept}", file=sys.stderr)
    print(report.table(result))
    _RESULTS.mkdir(exist_ok=True)
    path = _RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-{result['git_sha']}{_label(args)}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")
    failed = [name for name, figures in result["scenarios"].items() if figures["errors"]]
    for stage in ("sweep", "memory", "verify_offline"):
        if result[stage] and result[stage]["errors"]:
            failed.append(stage)
    failed += [f"{name} at half peak" for name, f in result["half_peak"].items() if f["errors"]]
    if failed:
        print(f"errors in: {', '.join(failed)}", file=sys.stderr)
        for line in result["server_warnings"]:
            print(f"  server: {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
