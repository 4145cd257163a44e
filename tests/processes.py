"""Real `python -m authsvc` processes, for tests about processes (crashes, replicas, CLI).

`ServerGroup` starts `authsvc serve` processes on a given database and kills any
still running when the group closes. Each server's stderr is drained for the
life of the process (so it never blocks on a full pipe) and its last lines are
kept for assertion messages.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2_grpc
from bench.servers import SERVE_ARGS, http_listening_port, listening_port, open_files_argv
from tests.conftest import TEST_KEY_ENCRYPTION_KEYS, Launch, pool_on
from tests.helpers import Stub, login, register

__all__ = [
    "WAIT",
    "CommandRun",
    "IdleConnections",
    "ServerGroup",
    "ServerProcess",
    "authsvc_env",
    "eventually",
    "open_file_limits",
    "run_authsvc",
    "run_healthcheck",
    "server_group",
    "sessions_for_sweep",
    "started",
    "watch_until_serving",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
# Bounds every wait on a process (start, ready, exit) and on an awaited event;
# an upper bound that only a hang reaches, not a timing assertion.
WAIT = 30.0
# How often `eventually` looks again while it waits for an event.
POLL_INTERVAL = 0.05
_KEPT_STDERR_LINES = 200
# What an HTTP/2 client sends first: the connection preface, then an empty SETTINGS frame.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
_HTTP2_FRAME_HEADER = 9

T = TypeVar("T")


def authsvc_env(dsn: str | None, **settings: str) -> dict[str, str]:
    """This environment without AUTHSVC_*, plus the database URL (None: none, so serve runs
    an embedded PostgreSQL), fast argon2, one server process (no supervisor; tests of
    workers ask for more) and `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    if dsn is not None:
        env["AUTHSVC_DATABASE_URL"] = dsn
        env["AUTHSVC_KEY_ENCRYPTION_KEYS"] = TEST_KEY_ENCRYPTION_KEYS
    env.update(
        AUTHSVC_WORKERS="1",
        AUTHSVC_ARGON2_TIME_COST="1",
        AUTHSVC_ARGON2_MEMORY_KIB="1024",
        AUTHSVC_ARGON2_PARALLELISM="1",
        # Tests sign many accounts up from one address.
        AUTHSVC_SIGN_UPS_PER_IP="100000",
    )
    env.update(settings)
    return env


@dataclass(frozen=True, slots=True)
class CommandRun:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


async def run_authsvc(*args: str, env: dict[str, str], stdin: str | None = None) -> CommandRun:
    """Run one `python -m authsvc ...` command to its end (bounded by WAIT); `stdin` is fed in."""
    argv = (sys.executable, "-m", "authsvc", *args)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        async with asyncio.timeout(WAIT):
            out, err = await process.communicate(None if stdin is None else stdin.encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return CommandRun(argv, process.returncode, out.decode(), err.decode())


async def run_healthcheck(port: int, *flags: str, **settings: str) -> CommandRun:
    """`python -m authsvc healthcheck [flags]` against 127.0.0.1:port, with AUTHSVC_<NAME> for
    each `name` in `settings` (tls_client_cert_file=..., say) and no other AUTHSVC_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(AUTHSVC_HOST="127.0.0.1", AUTHSVC_PORT=str(port))
    env.update({f"AUTHSVC_{name.upper()}": value for name, value in settings.items()})
    return await run_authsvc("healthcheck", *flags, env=env)


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = WAIT) -> None:
    """Wait until `check()` is true: a bounded wait for an event, looked at every POLL_INTERVAL."""
    async with asyncio.timeout(within):
        # Polled: the events waited for (a lock wait in PostgreSQL, a key reload in
        # another process) cannot be subscribed to.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)


async def sessions_for_sweep(launch: Launch, dsn: str, *, expired: int, live: int = 0) -> list[str]:
    """Make `expired` sessions (of one user) that expired long ago and `live` current ones
    (of new users) on `dsn`; return the live ones' ids.

    Made through an in-process server whose clock starts 30 days back (the idle timeout
    is 7 days), so a `sweep` command's or a server process's real clock sees them expired.
    """
    clock = FrozenClock(datetime.now(UTC) - timedelta(days=30))
    async with pool_on(dsn) as pool:
        launched = await launch(database_url=dsn, server_pool=pool, server_clock=clock)
        try:
            await register(launched.stub, email="old@example.com")
            for _ in range(expired - 1):
                await login(launched.stub, email="old@example.com")
            clock.advance(timedelta(days=30))
            return [
                (await register(launched.stub, email=f"new{n}@example.com")).session_id
                for n in range(live)
            ]
        finally:
            await launched.server.stop(None)


def started(call: Awaitable[T]) -> asyncio.Task[T]:
    """Run an awaitable (a gRPC call object, say) as a task, so it is in flight now."""

    async def wait() -> T:
        return await call

    return asyncio.create_task(wait())


async def watch_until_serving(channel: grpc.aio.Channel) -> None:
    """Follow the health Watch stream on `channel` until it says SERVING."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=""), wait_for_ready=True
    )
    async for response in watch:
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return
    raise AssertionError("health stream ended before SERVING")


def open_file_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of a running process, from /proc/<pid>/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


class IdleConnections:
    """TCP connections to 127.0.0.1:port that send the HTTP/2 preface, then nothing:
    what a client that connected and went idle leaves on the server."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._open: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open(self, count: int) -> None:
        """Open `count` more. The kernel completes each TCP handshake, whether or not the
        server ever accepts the connection."""
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
            writer.write(HTTP2_PREFACE)
            self._open.append((reader, writer))

    async def frames_until_closed(self, index: int = 0) -> list[int]:
        """The HTTP/2 frame types the server sends on connection `index` until it closes
        the connection (bounded by WAIT)."""
        reader = self._open[index][0]
        types = []
        async with asyncio.timeout(WAIT):
            while header := await reader.read(_HTTP2_FRAME_HEADER):
                if len(header) < _HTTP2_FRAME_HEADER:
                    header += await reader.readexactly(_HTTP2_FRAME_HEADER - len(header))
                types.append(header[3])
                await reader.readexactly(int.from_bytes(header[:3], "big"))
        return types

    def close(self) -> None:
        for _, writer in self._open:
            writer.close()
        self._open.clear()


class ServerProcess:
    """One `authsvc serve` process, with a channel, an AuthService stub and a Health stub."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        port: int,
        drain: asyncio.Task[None],
        stderr: collections.deque[str],
    ) -> None:
        self.process = process
        self.port = port
        # Its HTTP port, if it has one: that line comes before the gRPC port's.
        self.http_port = next(filter(None, map(http_listening_port, stderr)), None)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub: Stub = auth_service_pb2_grpc.AuthServiceStub(self.channel)
        self.health: Any = health_pb2_grpc.HealthStub(self.channel)
        self._drain = drain
        self._stderr = stderr

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    async def until_serving(self) -> None:
        """Follow the health Watch stream until SERVING; fail at once if the process exits."""
        serving = asyncio.create_task(self._watch_until_serving())
        exited = asyncio.create_task(self.process.wait())
        try:
            async with asyncio.timeout(WAIT):
                await asyncio.wait({serving, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (serving, exited):
                task.cancel()
            await asyncio.gather(serving, exited, return_exceptions=True)
        if serving.cancelled():
            raise AssertionError(
                f"server exited ({self.process.returncode}) before SERVING:\n{self.stderr_tail}"
            )
        serving.result()

    async def _watch_until_serving(self) -> None:
        try:
            await watch_until_serving(self.channel)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.stderr_tail}") from None

    async def kill(self) -> None:
        """SIGKILL: the process dies at once, whatever it was doing."""
        if self.process.returncode is None:
            self.process.kill()
        await self.wait()

    def terminate(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM (or SIGINT, Ctrl-C): ask for a graceful shutdown (see `wait`)."""
        self.process.send_signal(signum)

    async def wait(self, within: float = WAIT) -> int:
        """The exit code, once the process has exited and its stderr is drained."""
        async with asyncio.timeout(within):
            code = await self.process.wait()
            await self._drain
        return code

    async def close(self) -> None:
        await self.channel.close()
        await self.kill()


async def _drain(
    stream: asyncio.StreamReader, port: asyncio.Future[int], kept: collections.deque[str]
) -> None:
    """Read stderr to its end, keep its last lines, and report the port line."""
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip("\n")
        kept.append(text)
        bound = listening_port(text)
        if bound is not None and not port.done():
            port.set_result(bound)
    if not port.done():
        tail = "\n".join(kept)
        port.set_exception(AssertionError(f"serve exited before printing its port:\n{tail}"))


class ServerGroup:
    """Starts `authsvc serve` processes; `close()` kills whatever still runs.

    `open_files`: the (soft, hard) RLIMIT_NOFILE they start with; None: this process's.
    `python` runs `-m authsvc` in `cwd`: by default this checkout's; an installed package's
    is another interpreter in a directory outside the checkout.
    """

    def __init__(
        self,
        *,
        open_files: tuple[int, int] | None = None,
        python: Path = Path(sys.executable),
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.servers: list[ServerProcess] = []
        self._open_files = open_files
        self._python = python
        self._cwd = cwd

    async def start(self, dsn: str | None, port: int = 0, /, **settings: str) -> ServerProcess:
        """A server process on `dsn` (None: embedded) with AUTHSVC_* `settings`, listening
        on `port` (0: one the kernel picks; a dead server's, to restart it), not yet SERVING."""
        limits: tuple[str, ...] = ()
        if self._open_files is not None:
            limits = open_files_argv(*self._open_files)
        process = await asyncio.create_subprocess_exec(
            self._python,
            *limits,
            *SERVE_ARGS,
            *(("--port", str(port)) if port else ()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=authsvc_env(dsn, **settings),
            cwd=self._cwd,
        )
        assert process.stderr is not None
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        kept: collections.deque[str] = collections.deque(maxlen=_KEPT_STDERR_LINES)
        drain = asyncio.create_task(_drain(process.stderr, ready, kept))
        try:
            async with asyncio.timeout(WAIT):
                bound = await ready
        except BaseException:
            if process.returncode is None:  # it may have exited: that is the failure
                process.kill()
            await process.wait()
            await drain
            raise
        server = ServerProcess(process, bound, drain, kept)
        self.servers.append(server)
        return server

    async def start_ready(
        self, dsn: str | None, port: int = 0, /, **settings: str
    ) -> ServerProcess:
        """A server process on `dsn` (and `port`, as `start`) that reports SERVING."""
        server = await self.start(dsn, port, **settings)
        await server.until_serving()
        return server

    async def close(self) -> None:
        for server in self.servers:
            await server.close()


@asynccontextmanager
async def server_group(
    *,
    open_files: tuple[int, int] | None = None,
    python: Path = Path(sys.executable),
    cwd: Path = REPO_ROOT,
) -> AsyncIterator[ServerGroup]:
    group = ServerGroup(open_files=open_files, python=python, cwd=cwd)
    try:
        yield group
    finally:
        await group.close()
