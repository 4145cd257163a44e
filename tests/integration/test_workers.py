"""`authsvc serve --workers 2`: a supervisor and two server processes on one port.

Which worker answered a call is read from its access-log line (every JSON
line carries the writing process's pid; the workers share the supervisor's
stderr), matched by the call's x-request-id. Each probe opens its own TCP
connection, and the kernel spreads connections over the workers, so a few
probes reach both. Worker processes are found in /proc (children of the
supervisor, with `--worker=<index>` on their command line).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import Launch, NewDatabase, pool_on
from tests.helpers import Stub, login, refresh, register, validate
from tests.processes import (
    WAIT,
    ServerProcess,
    authsvc_env,
    eventually,
    run_authsvc,
    server_group,
    sessions_for_sweep,
    watch_until_serving,
)

pytestmark = pytest.mark.asyncio


WORKERS = 2
# Connections opened to reach every worker before giving up: with two workers
# and the kernel's hash spreading them, all landing on one is a 2**-63 chance.
MAX_PROBES = 64
# A new TCP connection per channel, rather than one shared by equal targets.
_OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


@dataclass(frozen=True, slots=True)
class Workers:
    dsn: str
    server: ServerProcess  # the supervisor: the process the tests started
    pids: dict[int, int]  # worker index -> pid, from /proc
    stubs: dict[int, Stub]  # worker index -> a stub whose connection that worker serves
    answered_by: set[int]  # pids whose access log shows a probe call


StartWorkers = Callable[..., Awaitable[Workers]]


# --- processes, seen through /proc ------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def is_running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (dead, not yet reaped)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def worker_pids(supervisor: int) -> dict[int, int]:
    """The supervisor's children, by the index in their `--worker=<index>` argument."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != supervisor:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for arg in argv:
            if arg.startswith("--worker="):
                found[int(arg.removeprefix("--worker="))] = int(entry.name)
    return found


# --- the workers' shared log --------------------------------------------------------


def log_entries(server: ServerProcess) -> list[dict[str, Any]]:
    """The JSON lines among the server's kept stderr lines."""
    entries = []
    for line in server.stderr_tail.splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def pid_that_logged(server: ServerProcess, request_id: str) -> int | None:
    for entry in log_entries(server):
        if entry.get("request_id") == request_id and entry.get("event") == "rpc":
            pid: int = entry["pid"]
            return pid
    return None


async def logged(server: ServerProcess, request_id: str) -> bool:
    return pid_that_logged(server, request_id) is not None


async def probe(server: ServerProcess, channel: grpc.aio.Channel) -> int:
    """The pid of the worker serving this channel's connection."""
    request_id = f"probe-{uuid.uuid4().hex}"
    await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""),
        metadata=(("x-request-id", request_id),),
        wait_for_ready=True,
        timeout=WAIT,
    )
    await eventually(functools.partial(logged, server, request_id))
    pid = pid_that_logged(server, request_id)
    assert pid is not None
    return pid


@pytest_asyncio.fixture
async def start_workers(new_database: NewDatabase) -> AsyncIterator[StartWorkers]:
    """Factory: `authsvc serve --workers 2` on port 0 and a fresh (or given) database,
    with a connection to each worker, each SERVING."""
    async with server_group() as group, AsyncExitStack() as channels:

        async def start(dsn: str | None = None, **settings: str) -> Workers:
            dsn = dsn or await new_database()
            # Probes are health checks, whose access-log lines are at DEBUG.
            server = await group.start(
                dsn, AUTHSVC_WORKERS=str(WORKERS), AUTHSVC_LOG_LEVEL="DEBUG", **settings
            )
            pids = worker_pids(server.process.pid)
            by_pid: dict[int, grpc.aio.Channel] = {}
            for _ in range(MAX_PROBES):
                channel = grpc.aio.insecure_channel(
                    f"127.0.0.1:{server.port}", options=_OWN_CONNECTION
                )
                pid = await probe(server, channel)
                if pid in by_pid:
                    await channel.close()
                    continue
                by_pid[pid] = await channels.enter_async_context(channel)
                if len(by_pid) == WORKERS:
                    break
            for channel in by_pid.values():
                await watch_until_serving(channel)
            return Workers(
                dsn=dsn,
                server=server,
                pids=pids,
                stubs={
                    index: auth_service_pb2_grpc.AuthServiceStub(by_pid[pid])
                    for index, pid in pids.items()
                    if pid in by_pid
                },
                answered_by=set(by_pid),
            )

        yield start


# --- one port, every worker serving --------------------------------------------------


async def test_calls_on_the_one_port_are_served_by_each_worker_process(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers()

    assert sorted(workers.pids) == list(range(WORKERS))
    assert workers.answered_by == set(workers.pids.values())


async def test_a_session_started_on_one_worker_refreshes_and_validates_on_the_other(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers()
    first, second = workers.stubs[0], workers.stubs[1]
    await register(first, email="ada@example.com")
    signed_in = await login(second, email="ada@example.com")

    refreshed = await refresh(first, signed_in.refresh_token)

    validation = await validate(second, refreshed.access_token)
    assert refreshed.session_id == signed_in.session_id
    assert (validation.active, validation.session_id) == (True, signed_in.session_id)


async def test_healthcheck_reports_serving_through_the_shared_port(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers()

    run = await run_authsvc(
        "healthcheck",
        "--host",
        "127.0.0.1",
        "--port",
        str(workers.server.port),
        env=authsvc_env(workers.dsn),
    )

    assert run.code == 0, run.stderr
    assert run.stdout.strip() == "SERVING"


# --- one sweeper -----------------------------------------------------------------------


SWEEP_PASSES = 6


def sweeping_pids(server: ServerProcess) -> list[int]:
    """The pid of each finished sweep pass in the kept log, in order."""
    return [entry["pid"] for entry in log_entries(server) if entry.get("event") == "sweep"]


async def sessions_left(dsn: str) -> int:
    """Sessions the sweeper has not marked ended."""
    async with pool_on(dsn, max_size=2) as pool:
        count: int = await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL")
    return count


async def test_only_worker_0_sweeps_and_it_marks_expired_sessions_ended(
    start_workers: StartWorkers, new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database(migrated=True)
    await sessions_for_sweep(launch, dsn, expired=3)
    # Both workers would sweep several times over in the passes waited for, if both swept.
    workers = await start_workers(dsn, AUTHSVC_SWEEP_INTERVAL="100ms")

    async def swept_several_times() -> bool:
        return len(sweeping_pids(workers.server)) >= SWEEP_PASSES

    await eventually(swept_several_times)

    assert set(sweeping_pids(workers.server)) == {workers.pids[0]}
    assert await sessions_left(dsn) == 0


# --- stopping ------------------------------------------------------------------------


async def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers()

    workers.server.terminate()

    code = await workers.server.wait()
    assert code == 0, workers.server.stderr_tail
    assert [pid for pid in workers.pids.values() if is_running(pid)] == []


async def test_a_worker_that_dies_stops_the_others_and_the_supervisor_exits_non_zero(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers()

    os.kill(workers.pids[1], signal.SIGKILL)

    code = await workers.server.wait()
    assert code != 0
    assert not is_running(workers.pids[0])


async def test_a_killed_supervisor_leaves_no_worker_running(
    start_workers: StartWorkers,
) -> None:
    workers = await start_workers()

    await workers.server.kill()

    async def workers_gone() -> bool:
        return not any(is_running(pid) for pid in workers.pids.values())

    await eventually(workers_gone)
    assert [pid for pid in workers.pids.values() if is_running(pid)] == []
