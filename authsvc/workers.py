"""`authsvc serve --workers N`: one supervisor, N server processes on one port.

The supervisor binds the port first (SO_REUSEPORT, bound but never
listening: it only reserves the port, and with port 0 picks it), then starts
N workers, `python -m authsvc serve --worker=I` on that port, each today's
single-process server with SO_REUSEPORT on, so the kernel spreads incoming
connections among them. Worker 0 alone runs the sweeper.

The protocol with a worker is its two standard streams: it writes one line to
stdout once its port is open, and its stdin is a pipe that only the
supervisor holds, so it reads EOF when the supervisor is gone, however it
ended (even SIGKILL), and shuts down. Its stderr is the supervisor's.

With AUTHSVC_METRICS, the workers share a metrics directory (AUTHSVC_METRICS_DIR, else
a private one the supervisor removes at exit) where each keeps its values, so whichever
worker the kernel hands a scrape answers for all of them.

SIGTERM or SIGINT to the supervisor stops every worker gracefully, then the
supervisor exits 0. A worker that exits on its own is a failure: the
supervisor stops the others and exits non-zero, so the orchestrator restarts
the whole thing rather than the supervisor papering over a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from authsvc.config import SETTINGS, Config
from authsvc.geoip import open_geoip_database
from authsvc.ports import BindFailed, bind_listener, probe_port
from authsvc.telemetry import multiprocess
from authsvc.tls import http_tls, server_credentials

__all__ = ["KILL_AFTER", "SWEEPING_WORKER", "report_listening", "supervise", "watch_supervisor"]

_log = logging.getLogger(__name__)

SWEEPING_WORKER = 0
# A worker still running this long after the shutdown grace is killed.
KILL_AFTER = 10.0
# Settings the supervisor decides for its workers rather than passing on.
_NOT_FORWARDED = frozenset({"port", "http_port", "workers", "metrics_dir"})
# How a worker may end after being asked to stop: normally, or by the SIGTERM
# itself if it arrived before the worker had installed its handlers.
_STOPPED = frozenset({0, -signal.SIGTERM})


@dataclass(slots=True)
class _Worker:
    index: int
    process: asyncio.subprocess.Process


async def supervise(config: Config, dsn: str, flags: Mapping[str, str | None]) -> int:
    """Run `config.workers` servers on one port until a signal or a worker's exit.

    `flags` are the command line's setting values, passed on to every worker.
    Returns the exit code: 0 after a requested stop, non-zero if a worker
    failed (its own code if it gave one) or the port could not be bound.
    """
    # A bad certificate, key or GeoIP database fails once, here.
    server_credentials(config)
    if config.http_port is not None:
        http_tls(config)
    locator = open_geoip_database(config)
    if locator is not None:
        locator.close()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.ExitStack() as reservations:
        metrics_dir = reservations.enter_context(_metrics_dir(config))
        try:
            port = _reserve(reservations, config.host, config.port)
            http_port = (
                None
                if config.http_port is None
                else _reserve(reservations, config.http_listen_host, config.http_port)
            )
        except BindFailed as exc:
            print(f"authsvc: {exc}", file=sys.stderr)
            return 1
        argv = _worker_argv(config, dsn, flags, port, http_port, metrics_dir)
        # What tests and tools wait for, once every worker listens; the gRPC line last.
        ready = [f"authsvc: serving gRPC on {config.host}:{port}"]
        if http_port is not None:
            ready.insert(0, f"authsvc: serving HTTP on {config.http_listen_host}:{http_port}")
        workers: list[_Worker] = []
        try:
            for index in range(config.workers):
                workers.append(await _start(argv, index, metrics_dir))
            _log.info(
                "workers started",
                extra={
                    "event": "workers_started",
                    "port": port,
                    "http_port": http_port,
                    "workers": [worker.process.pid for worker in workers],
                },
            )
            return await _watch(
                workers, stop, ready, config.shutdown_grace.total_seconds(), metrics_dir
            )
        finally:
            await _stop_all(workers, config.shutdown_grace.total_seconds())


def watch_supervisor(on_gone: Callable[[], None]) -> None:
    """In a worker: call `on_gone` when the supervisor has gone (stdin reaches EOF)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if os.read(fd, 512):
            return  # the supervisor never writes; nothing to do
        loop.remove_reader(fd)
        _log.warning("supervisor gone; stopping", extra={"event": "supervisor_gone"})
        on_gone()

    loop.add_reader(fd, readable)


def report_listening(port: int) -> None:
    """In a worker: tell the supervisor the port is open (its one line on stdout)."""
    print(f"listening {port}", flush=True)


@contextlib.contextmanager
def _metrics_dir(config: Config) -> Iterator[Path | None]:
    """The workers' shared metrics directory for the block; None with metrics off."""
    if not config.metrics:
        yield None
        return
    with multiprocess.shared_dir(config.metrics_dir) as directory:
        yield directory


def _reserve(reservations: contextlib.ExitStack, host: str, port: int) -> int:
    """Reserve host:port for the workers until `reservations` closes; the port reserved
    (port 0: a free one). BindFailed if another process has it or it cannot be bound."""
    if port:
        # Workers join the reservation with SO_REUSEPORT, and so would they another
        # server's port: the kernel would then split that server's calls with them.
        probe_port(host, port)
    # Bound, never listening: workers join it with SO_REUSEPORT, while a process binding
    # without it (a single-process server, say) cannot take the port meanwhile. Not
    # listening, it never gets a connection: the kernel hands those to listening sockets.
    reservation = bind_listener(host, port, reuse_port=True)
    reserved: int = reservations.enter_context(reservation).getsockname()[1]
    return reserved


def _worker_argv(
    config: Config,
    dsn: str,
    flags: Mapping[str, str | None],
    port: int,
    http_port: int | None,
    metrics_dir: Path | None,
) -> list[str]:
    """The worker command line, less its --worker index.

    The environment is inherited, so only flags are passed on: the command
    line's own (a password in --database-url is no more visible than it was),
    the ports, and the embedded database's URL (a Unix socket; no password, only the
    pgpass file that holds it).
    """
    argv = [sys.executable, "-m", "authsvc", "serve"]
    for setting in SETTINGS:
        value = flags.get(setting.name)
        if value is not None and setting.name not in _NOT_FORWARDED:
            argv.append(f"{setting.flag}={value}")
    argv.append(f"--port={port}")
    if http_port is not None:
        argv.append(f"--http-port={http_port}")
    if config.database_url is None:
        argv.append(f"--database-url={dsn}")
    if metrics_dir is not None:
        argv.append(f"--metrics-dir={metrics_dir}")
    return argv


async def _start(argv: Sequence[str], index: int, metrics_dir: Path | None) -> _Worker:
    # Set before the worker's first import: prometheus-client reads it then.
    env = (
        None
        if metrics_dir is None
        else {**os.environ, multiprocess.ENVIRONMENT_VARIABLE: str(metrics_dir)}
    )
    process = await asyncio.create_subprocess_exec(
        *argv,
        f"--worker={index}",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only,
        # which stops the workers in order.
        process_group=0,
    )
    return _Worker(index, process)


async def _watch(
    workers: list[_Worker],
    stop: asyncio.Event,
    ready: Sequence[str],
    grace: float,
    metrics_dir: Path | None,
) -> int:
    """Print the `ready` lines once every worker listens; return when asked to stop or one
    exits."""
    listening = 0
    watching = True

    def on_listening() -> None:
        nonlocal listening
        listening += 1
        if listening == len(workers) and watching:
            for line in ready:
                print(line, file=sys.stderr, flush=True)

    follows = [
        asyncio.create_task(_follow(worker, on_listening, metrics_dir)) for worker in workers
    ]
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *follows], return_when=asyncio.FIRST_COMPLETED)
    watching = False
    stopping.cancel()
    if stopping in done:
        _log.info("stopping workers", extra={"event": "shutdown"})
        await _stop_all(workers, grace)
        await asyncio.gather(*follows)
        codes = [worker.process.returncode for worker in workers]
        return 0 if all(code in _STOPPED for code in codes) else 1
    exited = next(task.result() for task in follows if task in done)
    code = exited.process.returncode
    assert code is not None
    _log.error(
        "worker %d exited (%d); stopping the others",
        exited.index,
        code,
        extra={"event": "worker_exited", "worker": exited.index, "code": code},
    )
    await _stop_all(workers, grace)
    await asyncio.gather(*follows)
    return code if code > 0 else 1


async def _follow(
    worker: _Worker, on_listening: Callable[[], None], metrics_dir: Path | None
) -> _Worker:
    """Wait for the worker's line, then for its exit; return it once it has exited."""
    stdout = worker.process.stdout
    assert stdout is not None
    if await stdout.readline():
        on_listening()
        while await stdout.read(4096):  # nothing more is expected; never let the pipe fill
            pass
    await worker.process.wait()
    if metrics_dir is not None:
        multiprocess.forget_process(worker.process.pid, metrics_dir)
    return worker


async def _stop_all(workers: list[_Worker], grace: float) -> None:
    """SIGTERM every running worker and wait; kill those still running well past `grace`."""
    running = [worker.process for worker in workers if worker.process.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace + KILL_AFTER):
            await asyncio.gather(*(process.wait() for process in running))
    except TimeoutError:
        for process in running:
            if process.returncode is None:
                _log.error(
                    "worker process %d did not stop; killing it",
                    process.pid,
                    extra={"event": "worker_killed", "worker_pid": process.pid},
                )
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await asyncio.gather(*(process.wait() for process in running))
