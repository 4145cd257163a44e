"""Failover to a synchronous standby: time to recover and failed calls, median and worst.

The scenario tests/scale/test_failover.py asserts (tests/scale/failover_scenario.py): one
`authsvc serve` on a primary and a synchronous standby's two-host URL, clients refreshing in a
loop; each round SIGKILLs the primary and promotes the standby at once. Per round:

- time to recover: from the SIGKILL (or, with `--switch fence`, the read-only fence) until
  every client is answered again; the promotion is included, a failover manager's detection
  delay is not (the harness promotes at once, or once the fence's refusals are seen);
- failed calls: the Refresh calls that ended, failed, between the switch and the recovery;
- feed resumed: from the recovery until a WatchRevocations subscriber connected before the
  first round sees a revocation made right after it.

It also prints the Refresh latency under the same load before the first failover: with
`--replication asynchronous --rounds 0`, what synchronous replication costs.

    .venv/bin/python -m bench.failover --rounds 5
    .venv/bin/python -m bench.failover --rounds 0 --replication asynchronous
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench.report import quantile
from tests.scale.failover_scenario import CLIENTS, FailoverRun, Switch, run_failovers
from tests.scale.replicated_postgres import ReplicatedPostgres, Replication


async def _run(rounds: int, switch: Switch, replication: Replication, steady: float) -> FailoverRun:
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-failover-") as root:
        cluster = ReplicatedPostgres(Path(root), replication)
        try:
            await cluster.start()
            return await run_failovers(cluster, rounds, switch=switch, steady_seconds=steady)
        finally:
            await cluster.close()


def _line(name: str, values: list[float], unit: str, digits: int) -> str:
    shown = ", ".join(f"{value:.{digits}f}" for value in values)
    return (
        f"{name:<18} median {statistics.median(values):.{digits}f}{unit}"
        f"  worst {max(values):.{digits}f}{unit}  ({shown})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="failovers")
    parser.add_argument(
        "--switch",
        choices=[switch.value for switch in Switch],
        default=Switch.CRASH.value,
        help="crash: SIGKILL the primary; fence: make it read-only (a planned switchover)",
    )
    parser.add_argument(
        "--replication",
        choices=[replication.value for replication in Replication],
        default=Replication.SYNCHRONOUS.value,
        help="asynchronous may lose a rotation at a failover, and then the run fails: use it"
        " with --rounds 0, for the steady Refresh latency only",
    )
    parser.add_argument(
        "--steady", type=float, default=3.0, help="seconds of load before the first failover"
    )
    args = parser.parse_args()
    switch = Switch(args.switch)
    replication = Replication(args.replication)
    run = asyncio.run(_run(args.rounds, switch, replication, args.steady))
    first_switch = min((f.switched_at for f in run.failovers), default=float("inf"))
    steady = sorted((c.ended - c.started) * 1000 for c in run.calls if c.ended < first_switch)
    print(
        f"steady Refresh ({replication.value} replication, {len(steady)} calls):"
        f" median {quantile(steady, 0.5):.1f} ms  p99 {quantile(steady, 0.99):.1f} ms"
    )
    failovers = run.failovers
    if not failovers:
        return
    print(f"{len(failovers)} failovers ({switch.value}), {CLIENTS} clients refreshing in a loop")
    print(_line("time to recover", [f.time_to_recover for f in failovers], " s", 2))
    print(_line("promote returned", [f.promoted_at - f.switched_at for f in failovers], " s", 2))
    print(_line("failed calls", [float(len(f.failed)) for f in failovers], "", 0))
    print(_line("feed resumed", [f.feed_resumed_in for f in failovers], " s", 2))
    outcomes = sorted({f"{c.outcome[0].name} {c.outcome[1]}" for f in failovers for c in f.failed})
    print(f"failed with: {', '.join(outcomes) or 'nothing'}")


if __name__ == "__main__":
    main()
