"""The processes under test: authsvc itself and the empty gRPC server, each
started as a subprocess with its stderr in a log file (a full pipe would stall it).

Either may be several processes on one port (authsvc's own `--workers N`; N
empty servers with SO_REUSEPORT), so CPU and memory are summed over the whole
process tree, and either may be pinned to given CPUs with `taskset`.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "SERVE_ARGS",
    "ServerProcess",
    "http_listening_port",
    "listening_port",
    "open_files_argv",
    "process_tree",
    "spawn",
    "start_authsvc",
    "start_empty_server",
    "start_otlp_sink",
    "wait_serving",
    "with_key_encryption_keys",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# `authsvc serve` as every launcher runs it (bench and tests/processes.py), after the
# interpreter: on loopback, on a port the kernel picks, which the ready line then names.
SERVE_ARGS = ("-m", "authsvc", "serve", "--host", "127.0.0.1", "--port", "0")
# The ready line of authsvc, the empty server and the better-auth peer (which has no gRPC).
_PORT_LINE = re.compile(r"(?:serving gRPC|better-auth peer: serving HTTP) on [^:]+:(\d+)")
# authsvc's HTTP port's, printed before its gRPC line when there is one.
_HTTP_PORT_LINE = re.compile(r"authsvc: serving HTTP on [^:]+:(\d+)")
# Runs the rest of its argv with RLIMIT_NOFILE set to argv[1]:argv[2], in a fresh
# interpreter (unlike preexec_fn, which is unsafe in a threaded process).
_WITH_OPEN_FILES = (
    "import os, resource, sys;"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])));"
    "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])"
)
# Generous throttle limits so the bench measures logins, not the lockout.
# The sweeper waits a day: the sweep stage runs `authsvc sweep` when it chooses.
_BENCH_ENV = {
    "AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
    "AUTHSVC_LOGIN_FAILURES_PER_IP": "1000000",
    "AUTHSVC_SWEEP_INTERVAL": "24h",
}
# The bench's key-encryption key, where the environment names none: fixed, so a database
# kept between runs (--database-url) stays readable. Bench databases hold no real keys.
_BENCH_KEY_ENCRYPTION_KEYS = "bench:" + "YmVuY2gta2V5LWVuY3J5cHRpb24ta2V5LTMyYnl0ZXM="


def listening_port(text: str) -> int | None:
    """The port in a server's ready line (`...serving gRPC on HOST:PORT`), if `text` holds it."""
    match = _PORT_LINE.search(text)
    return None if match is None else int(match[1])


def http_listening_port(text: str) -> int | None:
    """The HTTP port in authsvc's line `...serving HTTP on HOST:PORT`, if `text` holds it."""
    match = _HTTP_PORT_LINE.search(text)
    return None if match is None else int(match[1])


def open_files_argv(soft: int, hard: int) -> tuple[str, ...]:
    """Interpreter arguments that start the `-m ...` after them with RLIMIT_NOFILE soft:hard."""
    return ("-c", _WITH_OPEN_FILES, str(soft), str(hard))


def with_key_encryption_keys(env: dict[str, str]) -> dict[str, str]:
    """`env`, with the bench's key-encryption key unless it sets one (or a file of them)."""
    if "AUTHSVC_KEY_ENCRYPTION_KEYS" in env or "AUTHSVC_KEY_ENCRYPTION_KEYS_FILE" in env:
        return env
    return {**env, "AUTHSVC_KEY_ENCRYPTION_KEYS": _BENCH_KEY_ENCRYPTION_KEYS}


@dataclass(slots=True)
class ServerProcess:
    """One server under test: one or more processes listening on one port."""

    name: str
    popens: list[subprocess.Popen[bytes]]
    port: int
    log_path: Path
    reserved: socket.socket | None = field(default=None)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popens[0].pid

    def pids(self) -> list[int]:
        """Every live process of this server: the ones started and their descendants."""
        return process_tree(popen.pid for popen in self.popens)

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of this server, from /proc."""
        total = 0
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields:
                total += int(fields[11]) + int(fields[12])
        return total / _CLOCK_TICKS

    def rss_bytes(self) -> int:
        return sum(_status_kib(pid, "VmRSS") for pid in self.pids()) * 1024

    def hwm_bytes(self) -> int:
        """The sum of each process's own peak RSS."""
        return sum(_status_kib(pid, "VmHWM") for pid in self.pids()) * 1024

    def stop(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.terminate()
        for popen in self.popens:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        if self.reserved is not None:
            self.reserved.close()


def process_tree(roots: Iterable[int]) -> list[int]:
    """`roots` and all their descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for pid, parent in _stats():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _stat_fields(pid: int) -> list[str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2 :].split()


def _stats() -> Iterator[tuple[int, int]]:
    """(pid, parent pid) of every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                yield int(entry.name), int(fields[1])


def _status_kib(pid: int, key: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


def _pinned(argv: list[str], cpus: Sequence[int]) -> list[str]:
    if not cpus:
        return argv
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv]


def spawn(
    name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> ServerProcess:
    with log_path.open("wb") as log:
        popen = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=cwd)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited early; see {log_path}:\n{log_path.read_text()}")
        if (port := listening_port(log_path.read_text(errors="replace"))) is not None:
            return ServerProcess(name=name, popens=[popen], port=port, log_path=log_path)
        time.sleep(0.05)
    popen.kill()
    raise RuntimeError(f"{name} did not listen within 60 s; see {log_path}")


def start_authsvc(
    dsn: str,
    work_dir: Path,
    log_level: str,
    *,
    workers: int = 1,
    cpus: Sequence[int] = (),
    service_keys: str = "",
    name: str = "authsvc",
    source: Path | None = None,
    settings: Mapping[str, str] | None = None,
) -> ServerProcess:
    """`python -m authsvc serve --workers N` on 127.0.0.1, an ephemeral port,
    default argon2id; `service_keys` are AUTHSVC_SERVICE_KEYS entries; `name` names its log
    (`<name>.log`), so replicas keep apart. `source`: run the authsvc package of that source
    tree (another version, e.g. main's, to compare with in the same run) instead of this
    checkout's. `settings`: more environment (AUTHSVC_*, OTEL_*) beside the bench's own."""
    if source is not None and name == "authsvc":
        name = "authsvc-baseline"
    env = {
        **os.environ,
        **_BENCH_ENV,
        "AUTHSVC_SERVICE_KEYS": service_keys,
        "AUTHSVC_DATABASE_URL": dsn,
        "AUTHSVC_DATA_DIR": str(work_dir / f"{name}-data"),
        "AUTHSVC_LOG_LEVEL": log_level,
        **(settings or {}),
    }
    if source is not None:
        # Ahead of the editable install of this checkout.
        env["PYTHONPATH"] = str(source)
    argv = [sys.executable, *SERVE_ARGS, "--workers", str(workers)]
    return spawn(
        name,
        _pinned(argv, cpus),
        with_key_encryption_keys(env),
        work_dir / f"{name}.log",
        cwd=source,
    )


def start_empty_server(
    work_dir: Path, *, workers: int = 1, cpus: Sequence[int] = ()
) -> ServerProcess:
    """`workers` empty servers on one port, like `authsvc serve --workers N`."""
    if workers == 1:
        argv = [sys.executable, "-m", "bench.empty_server", "0"]
        return spawn("empty server", _pinned(argv, cpus), dict(os.environ),
                      work_dir / "empty_server.log")  # fmt: skip
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    servers = [
        spawn(
            f"empty server {index}",
            _pinned([sys.executable, "-m", "bench.empty_server", str(port), "reuseport"], cpus),
            dict(os.environ),
            work_dir / f"empty_server_{index}.log",
        )
        for index in range(workers)
    ]
    return ServerProcess(
        name="empty servers",
        popens=[popen for server in servers for popen in server.popens],
        port=port,
        log_path=servers[0].log_path,
        reserved=reserved,
    )


def start_otlp_sink(work_dir: Path, *, cpus: Sequence[int] = ()) -> ServerProcess:
    """An OTLP/gRPC collector that drops what it receives (bench/otlp_sink.py)."""
    argv = [sys.executable, "-m", "bench.otlp_sink"]
    return spawn("OTLP sink", _pinned(argv, cpus), dict(os.environ), work_dir / "otlp_sink.log")


def start_webhook_receiver(
    work_dir: Path, *, delay: float, name: str, cpus: Sequence[int] = ()
) -> ServerProcess:
    """A webhook endpoint that answers each request after `delay` seconds
    (bench/slow_receiver.py); `name` names its log."""
    argv = [sys.executable, "-m", "bench.slow_receiver", "--delay", str(delay)]
    return spawn(name, _pinned(argv, cpus), dict(os.environ), work_dir / f"{name}.log")


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
