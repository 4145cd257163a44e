"""The processes under test: authsvc itself and the empty gRPC server, each
started as a subprocess with its stderr in a log file (a full pipe would stall it)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["ServerProcess", "start_authsvc", "start_empty_server"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PORT_LINE = re.compile(r"serving gRPC on [^:]+:(\d+)")
# Generous throttle limits so the bench measures logins, not the lockout.
_BENCH_ENV = {
    "AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
    "AUTHSVC_LOGIN_FAILURES_PER_IP": "1000000",
}


@dataclass(slots=True)
class ServerProcess:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (not its children), from /proc."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def rss_bytes(self) -> int:
        return _status_kib(self.pid, "VmRSS") * 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> ServerProcess:
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, env=env, stdout=log, stderr=log)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited early; see {log_path}:\n{log_path.read_text()}")
        if match := _PORT_LINE.search(log_path.read_text(errors="replace")):
            return ServerProcess(name=name, popen=popen, port=int(match[1]), log_path=log_path)
        time.sleep(0.05)
    popen.kill()
    raise RuntimeError(f"{name} did not listen within 60 s; see {log_path}")


def start_authsvc(dsn: str, work_dir: Path, log_level: str) -> ServerProcess:
    """`python -m authsvc serve` on 127.0.0.1, an ephemeral port, default argon2id."""
    env = {
        **os.environ,
        **_BENCH_ENV,
        "AUTHSVC_DATABASE_URL": dsn,
        "AUTHSVC_DATA_DIR": str(work_dir / "authsvc-data"),
        "AUTHSVC_LOG_LEVEL": log_level,
    }
    argv = [sys.executable, "-m", "authsvc", "serve", "--host", "127.0.0.1", "--port", "0"]
    return _spawn("authsvc", argv, env, work_dir / "authsvc.log")


def start_empty_server(work_dir: Path) -> ServerProcess:
    argv = [sys.executable, "-m", "bench.empty_server", "0"]
    return _spawn("empty server", argv, dict(os.environ), work_dir / "empty_server.log")


async def wait_serving(target: str, within: float = 60.0) -> None:
    """Until authsvc has migrated and loaded its keys (health SERVING)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"authsvc at {target} not SERVING within {within:g} s")
