"""Idle connections against the open-files limit: does Health still answer, and how fast?

Starts one `authsvc serve` process with a given RLIMIT_NOFILE, opens N idle HTTP/2
connections to it (the preface, then nothing), then probes Health.Check once a second,
each probe over a new connection, and prints what the server held and what the probes
saw. Timing is reported, never asserted.

Run: .venv/bin/python -m bench.idle_connections [--connections 1100] [--soft 1024]
     [--hard 1024] [--idle-timeout 10s] [--observe 20] [--server-root PATH]
     [--database-url URL]

`--server-root` runs another checkout's authsvc (an older commit, unpacked with
`git archive`), so one command measures before and after. Without `--database-url`
the server's database is unreachable, so Health answers NOT_SERVING: an answer is
what is measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.servers import SERVE_ARGS, listening_port, open_files_argv, with_key_encryption_keys

_REPO = Path(__file__).resolve().parents[1]
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
# Nothing listens on port 1: the server starts, and stays NOT_SERVING.
_UNREACHABLE_DATABASE = "postgresql://authsvc@127.0.0.1:1/authsvc"
_PROBE_TIMEOUT = 2.0
_START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Probe:
    at: float  # seconds since the last idle connection was opened
    latency: float | None  # None: no answer within _PROBE_TIMEOUT


def _limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise RuntimeError("no open-files line")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _start(args: argparse.Namespace, log: Path) -> tuple[asyncio.subprocess.Process, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_WORKERS="1",
        AUTHSVC_DATABASE_URL=args.database_url or _UNREACHABLE_DATABASE,
        AUTHSVC_CONNECTION_IDLE_TIMEOUT=args.idle_timeout,
    )
    root = args.server_root
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *open_files_argv(args.soft, args.hard),
            *SERVE_ARGS,
            env=with_key_encryption_keys({**env, "PYTHONPATH": str(root)}),
            cwd=root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        port = _port_in(log)
        if port is not None:
            return process, port
        await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start; see {log}")


def _port_in(log: Path) -> int | None:
    return listening_port(log.read_text(errors="replace"))


async def _probe(port: int) -> float | None:
    options = (("grpc.use_local_subchannel_pool", 1),)  # a new connection every probe
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=_PROBE_TIMEOUT, wait_for_ready=True
            )
        except grpc.aio.AioRpcError:
            return None
    return time.perf_counter() - started


def _events(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line).get("event", "")
            if event.startswith("open_files"):
                counts[event] = counts.get(event, 0) + 1
    return counts


async def run(args: argparse.Namespace) -> None:
    # This process holds the client end of every connection.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log = Path(args.log or Path(tempfile.mkdtemp(prefix="idle-connections-")) / "server.log")
    process, port = await _start(args, log)
    writers: list[asyncio.StreamWriter] = []
    try:
        baseline = await _probe(port)
        for _ in range(args.connections):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_PREFACE)
            writers.append(writer)
        opened_at = time.monotonic()
        probes = []
        while (now := time.monotonic() - opened_at) < args.observe:
            probes.append(Probe(now, await _probe(port)))
            await asyncio.sleep(max(0.0, 1.0 - (probes[-1].latency or _PROBE_TIMEOUT)))
        held = _open_fds(process.pid)
        soft, hard = _limits(process.pid)
    finally:
        for writer in writers:
            writer.close()
        process.terminate()
        await process.wait()
    answered = [p for p in probes if p.latency is not None]
    first = min((p.at for p in answered), default=None)
    print(f"server: {args.server_root}")
    print(f"started with soft/hard {args.soft}/{args.hard}; running with {soft}/{hard}")
    print(f"idle timeout setting: {args.idle_timeout} (ignored by servers that lack it)")
    print(f"idle connections opened: {args.connections}; server fds at the end: {held}")
    print(f"baseline probe: {_ms(baseline)}")
    print(f"probes answered: {len(answered)}/{len(probes)} over {args.observe:.0f}s")
    if answered:
        latencies = [p.latency for p in answered if p.latency is not None]
        print(
            f"first answer {first:.1f}s after the last idle connection opened; latency median "
            f"{_ms(statistics.median(latencies))}, max {_ms(max(latencies))}"
        )
    print(f"log events: {_events(log) or 'none'} (server log: {log})")


def _ms(seconds: float | None) -> str:
    return "no answer" if seconds is None else f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--soft", type=int, default=1024, help="soft RLIMIT_NOFILE at start")
    parser.add_argument("--hard", type=int, default=1024, help="hard RLIMIT_NOFILE")
    parser.add_argument("--idle-timeout", default="5m", help="AUTHSVC_CONNECTION_IDLE_TIMEOUT")
    parser.add_argument("--observe", type=float, default=20.0, help="seconds of probing")
    parser.add_argument(
        "--server-root", type=Path, default=_REPO, help="checkout to run authsvc from"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--log", default=None, help="file for the server's stderr")
    args = parser.parse_args()
    args.server_root = args.server_root.resolve()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
