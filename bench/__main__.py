"""`make bench`: drive the real authsvc server from separate load processes and
report every scenario next to the bound that limits it, measured in the same run.

Run: .venv/bin/python -m bench [--scenarios validate,refresh,...] [--duration 10]
     [--warmup 3] [--runs 3] [--concurrency 64] [--processes 2] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import argon2
import asyncpg

from authsvc.embedded_db import DATABASE_NAME, start_embedded_postgres
from authsvc.store.bootstrap import ensure_database
from bench import crypto, load
from bench.seed import SeededSession, Seeder
from bench.servers import ServerProcess, start_authsvc, start_empty_server, wait_serving

SCENARIOS = (
    "validate", "refresh", "refresh_same_token", "list_sessions", "get_jwks", "login",
    "revoke_session", "mixed",
)  # fmt: skip
BOUNDS = ("grpc_empty", "pg_refresh", "crypto")
PASSWORD = "bench password 1"
_RESULTS = Path(__file__).parent / "results"
# Ratio targets from issue 6: scenario -> (bound, least ratio).
TARGETS = {
    "refresh": ("min(grpc_empty, pg_refresh)", 0.5),
    "validate": ("grpc_empty", 0.6),
    "list_sessions": ("grpc_empty", 0.5),
    "login": ("argon2 all cores", 0.8),
}
_REVOKE_RATE_GUESS = 2500.0  # calls/s: sizes the sessions revoke_session may use up
_SERVER_POOL_MAX = 10  # authsvc's default AUTHSVC_DB_POOL_MAX_SIZE

Run = dict[str, Any]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS + BOUNDS))
    parser.add_argument("--duration", type=float, default=10.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up before it, s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight, in all")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--database-url", default=os.environ.get("AUTHSVC_DATABASE_URL", ""))
    parser.add_argument("--server-log-level", default="INFO")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS + BOUNDS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    args.scenarios = names
    if args.concurrency < args.processes:
        parser.error("--concurrency must be at least --processes")
    return args


class Bench:
    def __init__(self, args: argparse.Namespace, pool: asyncpg.Pool, dsn: str) -> None:
        self.args = args
        self.pool = pool
        self.dsn = dsn
        self.authsvc: ServerProcess | None = None
        self.empty: ServerProcess | None = None
        self.seeder: Seeder | None = None
        self.executor = ProcessPoolExecutor(args.processes, mp_context=get_context("spawn"))

    async def prepare_load_processes(self) -> None:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self.executor, load.warm_up) for _ in range(self.args.processes)
        ]
        await asyncio.gather(*futures)

    async def slots_for(self, scenario: str) -> list[load.Slot]:
        """Fresh seeded state for one run of `scenario`: one dict per call in flight."""
        assert self.seeder is not None
        seeder, concurrency = self.seeder, self.args.concurrency
        window = self.args.warmup + self.args.duration
        if scenario in ("grpc_empty", "get_jwks"):
            return [{} for _ in range(concurrency)]
        if scenario in ("refresh", "pg_refresh"):
            users = await seeder.users_with_sessions(concurrency, 1)
            return [{"refresh_token": mine[0].refresh_token} for mine in users]
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

    async def run_once(self, scenario: str) -> Run:
        assert self.authsvc is not None
        assert self.empty is not None
        args = self.args
        slots = await self.slots_for(scenario)
        server = {"grpc_empty": self.empty, "pg_refresh": None}.get(scenario, self.authsvc)
        target = (self.empty if scenario == "grpc_empty" else self.authsvc).target
        start_at = time.monotonic() + 1.0
        pg_pool_size = max(1, math.ceil(_SERVER_POOL_MAX / args.processes))
        specs = [
            load.LoadSpec(
                scenario=scenario,
                target=target,
                dsn=self.dsn,
                start_at=start_at,
                warmup=args.warmup,
                duration=args.duration,
                slots=slots[index :: args.processes],
                pg_pool_size=pg_pool_size,
                password=PASSWORD,
            )
            for index in range(args.processes)
        ]
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self.executor, load.run_load, spec) for spec in specs]
        window_start = start_at + args.warmup
        window_end = window_start + args.duration
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        cpu_before = server.cpu_seconds() if server else 0.0
        peak_rss = 0
        while time.monotonic() < window_end:
            if server:
                peak_rss = max(peak_rss, server.rss_bytes())
            await asyncio.sleep(min(0.25, max(0.0, window_end - time.monotonic())))
        cpu_used = server.cpu_seconds() - cpu_before if server else 0.0
        results = await asyncio.gather(*futures)
        latencies = sorted(x for result in results for x in result.latencies)
        codes: Counter[str] = Counter()
        for result in results:
            codes.update(result.codes)
        calls = len(latencies)
        errors = {code: n for code, n in sorted(codes.items()) if code != load.OK}
        return {
            "calls": calls,
            "calls_per_s": calls / args.duration,
            "p50_ms": _quantile(latencies, 0.50) * 1000,
            "p90_ms": _quantile(latencies, 0.90) * 1000,
            "p99_ms": _quantile(latencies, 0.99) * 1000,
            "errors": errors,
            "error_count": sum(errors.values()),
            "server_cpu_s_per_1k_calls": (cpu_used / calls * 1000) if server and calls else None,
            "server_peak_rss_mib": peak_rss / 2**20 if server else None,
            "load_start_late_s": max(result.late_by for result in results),
        }


def _emails(users: list[list[SeededSession]]) -> list[str]:
    return [mine[0].email for mine in users]


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _summary(runs: list[Run]) -> dict[str, Any]:
    """Median, min and max of each numeric figure over the runs; errors summed."""
    summary: dict[str, Any] = {}
    for key in ("calls_per_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu_s_per_1k_calls",
                "server_peak_rss_mib"):  # fmt: skip
        values = [run[key] for run in runs if run[key] is not None]
        if values:
            summary[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run["errors"])
    summary["errors"] = dict(sorted(errors.items()))
    return summary


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


def _ratios(summaries: dict[str, dict[str, Any]], crypto_rates: dict[str, Any]) -> dict[str, Any]:
    def rate(name: str) -> float | None:
        figure = summaries.get(name, {}).get("calls_per_s")
        return None if figure is None else float(figure["median"])

    empty, pg = rate("grpc_empty"), rate("pg_refresh")
    bounds: dict[str, tuple[str, float | None]] = {
        "refresh": (
            "min(grpc_empty, pg_refresh)",
            min(empty, pg) if empty is not None and pg is not None else None,
        ),
        "validate": ("grpc_empty", empty),
        "list_sessions": ("grpc_empty", empty),
        "get_jwks": ("grpc_empty", empty),
        "revoke_session": ("grpc_empty", empty),
        "mixed": ("grpc_empty", empty),
        "login": (
            "argon2 all cores",
            crypto_rates.get("all_cores", {}).get("argon2_hash_per_s", {}).get("median"),
        ),
    }
    ratios: dict[str, Any] = {}
    for scenario, (bound_name, bound) in bounds.items():
        measured = rate(scenario)
        if measured is None or not bound:
            continue
        target = TARGETS.get(scenario, (bound_name, None))[1]
        ratio = measured / bound
        ratios[scenario] = {
            "bound": bound_name,
            "bound_per_s": bound,
            "calls_per_s": measured,
            "ratio": ratio,
            "target": target,
            "met": None if target is None else ratio >= target,
        }
    return ratios


def _fmt(figure: dict[str, float] | None, digits: int = 0) -> str:
    if figure is None:
        return "-"
    med, lo, hi = figure["median"], figure["min"], figure["max"]
    if lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _table(report: dict[str, Any]) -> str:
    header = ("scenario", "calls/s", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU s/1k",
              "peak RSS MiB")  # fmt: skip
    rows = [header]
    for name, summary in report["scenarios"].items():
        errors = ", ".join(f"{code} {n}" for code, n in summary["errors"].items()) or "0"
        rows.append(
            (
                name,
                _fmt(summary.get("calls_per_s")),
                _fmt(summary.get("p50_ms"), 1),
                _fmt(summary.get("p90_ms"), 1),
                _fmt(summary.get("p99_ms"), 1),
                errors,
                _fmt(summary.get("server_cpu_s_per_1k_calls"), 2),
                _fmt(summary.get("server_peak_rss_mib")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    out = ["\n".join(lines)]
    if report["crypto"]:
        out.append("\ncrypto bound (in-process, median over runs)")
        for cores, rates in report["crypto"].items():
            parts = ", ".join(f"{name} {_fmt(value)}" for name, value in rates.items())
            out.append(f"  {cores}: {parts}")
    if report["ratios"]:
        out.append("\nratios to bounds (medians)")
        for name, ratio in report["ratios"].items():
            target = "" if ratio["target"] is None else f"  target >= {ratio['target']:.0%}"
            met = "" if ratio["met"] is None else ("  met" if ratio["met"] else "  NOT met")
            out.append(
                f"  {name:<15} {ratio['calls_per_s']:8.1f}/s vs {ratio['bound']} "
                f"{ratio['bound_per_s']:8.1f}/s = {ratio['ratio']:6.1%}{target}{met}"
            )
    return "\n".join(out)


async def _bench(args: argparse.Namespace, work_dir: Path, dsn: str) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    bench = Bench(args, pool, dsn)
    try:
        bench.authsvc = start_authsvc(dsn, work_dir, args.server_log_level)
        bench.empty = start_empty_server(work_dir)
        await wait_serving(bench.authsvc.target)
        bench.seeder = Seeder(pool, bench.authsvc.target, argon2.PasswordHasher().hash(PASSWORD))
        await bench.prepare_load_processes()
        summaries: dict[str, dict[str, Any]] = {}
        all_runs: dict[str, list[Run]] = {}
        for scenario in args.scenarios:
            if scenario == "crypto":
                continue
            runs = []
            for index in range(args.runs):
                run = await bench.run_once(scenario)
                runs.append(run)
                print(
                    f"{scenario} run {index + 1}/{args.runs}: {run['calls_per_s']:.1f} calls/s, "
                    f"p99 {run['p99_ms']:.1f} ms, errors {run['errors'] or 0}",
                    file=sys.stderr,
                    flush=True,
                )
            all_runs[scenario] = runs
            summaries[scenario] = _summary(runs)
        crypto_summary: dict[str, Any] = {}
        if "crypto" in args.scenarios:
            cores = os.cpu_count() or 1
            measured = [crypto.measure(1.0, cores) for _ in range(args.runs)]
            for scope in ("one_core", "all_cores"):
                crypto_summary[scope] = {
                    name: {
                        "median": statistics.median(m[scope][name] for m in measured),
                        "min": min(m[scope][name] for m in measured),
                        "max": max(m[scope][name] for m in measured),
                    }
                    for name in measured[0][scope]
                }
        hwm = _hwm(bench.authsvc)
    finally:
        bench.executor.shutdown(cancel_futures=True)
        for server in (bench.authsvc, bench.empty):
            if server is not None:
                server.stop()
        await pool.close()
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
            "database": "external" if args.database_url else "embedded",
            "server_log_level": args.server_log_level,
            "mixed_blend": {**dict(_blend()), load.MIX_LAST: 0.01},
        },
        "server_vm_hwm_mib": hwm,
        "scenarios": summaries,
        "runs": all_runs,
        "crypto": crypto_summary,
        "ratios": _ratios(summaries, crypto_summary),
    }


def _blend() -> list[tuple[str, float]]:
    shares, previous = [], 0.0
    for name, threshold in load.MIX:
        shares.append((name, round(threshold - previous, 4)))
        previous = threshold
    return shares


def _hwm(server: ServerProcess | None) -> float | None:
    if server is None:
        return None
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        work_dir = Path(tmp)
        embedded = None
        if args.database_url:
            dsn = args.database_url
        else:
            embedded = start_embedded_postgres(work_dir / "pg")
            asyncio.run(ensure_database(embedded.admin_dsn(), DATABASE_NAME))
            dsn = embedded.dsn()
        try:
            report = asyncio.run(_bench(args, work_dir, dsn))
        finally:
            if embedded is not None:
                embedded.stop()
    print(_table(report))
    _RESULTS.mkdir(exist_ok=True)
    path = _RESULTS / f"{datetime.now(UTC):%Y-%m-%d}-{report['git_sha']}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")
    if any(summary["errors"] for summary in report["scenarios"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
