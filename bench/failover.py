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

    .venv/bin/python -m bench.failover --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from tests.scale.failover_scenario import CLIENTS, FailoverRun, Switch, run_failovers
from tests.scale.replicated_postgres import ReplicatedPostgres


async def _run(rounds: int, switch: Switch) -> FailoverRun:
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-failover-") as root:
        cluster = ReplicatedPostgres(Path(root))
        try:
            await cluster.start()
            return await run_failovers(cluster, rounds, switch=switch)
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
    args = parser.parse_args()
    switch = Switch(args.switch)
    run = asyncio.run(_run(args.rounds, switch))
    failovers = run.failovers
    print(f"{len(failovers)} failovers ({switch.value}), {CLIENTS} clients refreshing in a loop")
    print(_line("time to recover", [f.time_to_recover for f in failovers], " s", 2))
    print(_line("promote returned", [f.promoted_at - f.switched_at for f in failovers], " s", 2))
    print(_line("failed calls", [float(len(f.failed)) for f in failovers], "", 0))
    print(_line("feed resumed", [f.feed_resumed_in for f in failovers], " s", 2))
    outcomes = sorted({f"{c.outcome[0].name} {c.outcome[1]}" for f in failovers for c in f.failed})
    print(f"failed with: {', '.join(outcomes) or 'nothing'}")


if __name__ == "__main__":
    main()
