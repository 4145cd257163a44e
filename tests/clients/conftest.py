"""Client tests: the authsvc-client package against a real server and PostgreSQL.

Async tests use the in-process server (`server`, `launch`) and start with empty tables, like
the integration tests; time moves only when a test moves the `clock` fixture, which the
server and the client under test share. Synchronous tests cannot use that server (it runs
on the session event loop, which does not run during a plain `def` test), so they use
`serve`: `python -m authsvc serve` in a subprocess on its own database, on the real clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from authsvc_client import AuthClient, TokenPair
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.app import AuthServer
from authsvc.config import Config
from authsvc.core.clock import FrozenClock
from authsvc.service_keys import mint_service_key
from authsvc.store.pool import Pool
from tests.conftest import ConfigFactory, NewDatabase, empty_tables
from tests.processes import authsvc_env

METHOD_PREFIX = "/authsvc.v1.AuthService/"

RpcCounter = Callable[[str], int]


def minted_claims(server: AuthServer, pair: TokenPair) -> dict[str, Any]:
    """The claims `server` would put in an access token of `pair`'s session now (a new
    jti each call), for tests that sign their own variations with the server's key."""
    now = int(server.clock.now().timestamp())
    return {
        "iss": "authsvc",
        "aud": "authsvc",
        "sub": str(pair.user_id),
        "sid": str(pair.session_id),
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 900,
        # A password session's, as the server mints them.
        "auth_time": now,
        "acr": "aal1",
        "amr": ["pwd"],
    }


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """A service key and the AUTHSVC_SERVICE_KEYS entry that admits it."""

    key: str = field(repr=False)
    entry: str
    name: str = "client-tests"


@pytest.fixture(scope="session")
def service_key() -> ServiceKey:
    key, entry = mint_service_key("client-tests")
    return ServiceKey(key, entry)


@pytest.fixture
def config(config_factory: ConfigFactory, service_key: ServiceKey) -> Config:
    """The test server admits `service_key` (and requires it nowhere it is optional)."""
    return config_factory(service_keys=service_key.entry)


@pytest_asyncio.fixture(autouse=True)
async def clean_db(pool: Pool) -> None:
    """Empty tables for each test; the migrations stay applied."""
    await empty_tables(pool)


@pytest_asyncio.fixture
async def client(server: AuthServer, clock: FrozenClock) -> AsyncIterator[AuthClient]:
    """An AuthClient on the test server that tells time by the server's clock."""
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as client:
        yield client


@pytest_asyncio.fixture
async def service_client(
    server: AuthServer, clock: FrozenClock, service_key: ServiceKey
) -> AsyncIterator[AuthClient]:
    """An internal service's AuthClient on the test server: with the service key, once the
    server's own revocation feed is current (until then WatchRevocations answers NOT_READY)."""
    assert server.revocation_feed is not None
    async with asyncio.timeout(START_TIMEOUT):
        await server.revocation_feed.wait_current()
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, service_key=service_key.key
    ) as client:
        yield client


@pytest.fixture
def server_rpcs(caplog: pytest.LogCaptureFixture) -> RpcCounter:
    """How many calls of an AuthService method the in-process server has answered so far.

    Counted from the server's access log ("authsvc.access": one record per RPC), so a test
    sees what reached the server, not what the client meant to send.
    """
    caplog.set_level(logging.INFO, logger="authsvc.access")

    def count(method: str) -> int:
        return sum(
            1
            for record in caplog.records
            if record.name == "authsvc.access"
            and getattr(record, "rpc", None) == METHOD_PREFIX + method
        )

    return count


# --- `authsvc serve` in a subprocess, for tests that cannot use the session loop ------

REPO_ROOT = Path(__file__).resolve().parents[2]
# Upper bounds for a subprocess to start and for log lines to arrive, not timing assertions.
START_TIMEOUT = 60.0
LOG_TIMEOUT = 10.0
_SERVING = "authsvc: serving gRPC on 127.0.0.1:"


@dataclass
class ServeProcess:
    """A running `authsvc serve` and the RPC lines of its JSON access log, read as they come."""

    process: subprocess.Popen[str]
    port: int = 0
    rpc_lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def mark(self) -> str:
        """Log a marker: a health check with our own request id, answered before we return."""
        marker = f"marker-{uuid.uuid4().hex}"
        with grpc.insecure_channel(self.target) as channel:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), metadata=(("x-request-id", marker),)
            )
        return marker

    def count_between(self, start: str, end: str, method: str) -> int:
        """How many `method` calls the server finished between two markers."""
        count, started = 0, False
        while True:
            line = self.rpc_lines.get(timeout=LOG_TIMEOUT)
            if line.get("request_id") == end:
                return count
            if line.get("request_id") == start:
                started = True
            elif started and line.get("rpc") == METHOD_PREFIX + method:
                count += 1


def _read_stderr(serve: ServeProcess, port: queue.Queue[int]) -> None:
    assert serve.process.stderr is not None
    for raw in serve.process.stderr:
        if raw.startswith(_SERVING):
            port.put(int(raw.removeprefix(_SERVING)))
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == "rpc":
            serve.rpc_lines.put(line)


@pytest_asyncio.fixture(scope="package")
async def serve_dsn(new_database: NewDatabase) -> str:
    dsn: str = await new_database(migrated=True)
    return dsn


@pytest.fixture(scope="package")
def serve(serve_dsn: str, service_key: ServiceKey) -> Iterator[ServeProcess]:
    """`authsvc serve`, admitting `service_key` (and requiring it nowhere it is optional),
    which is also an operator's, for the AdminService calls a test arranges with."""
    with _serving(
        serve_dsn,
        AUTHSVC_SERVICE_KEYS=service_key.entry,
        AUTHSVC_OPERATORS=service_key.name,
    ) as serve:
        yield serve


@pytest.fixture(scope="package")
def service_serve(serve_dsn: str, service_key: ServiceKey) -> Iterator[ServeProcess]:
    """Another `serve` on the same database, answering ValidateToken and GetJwks only to
    callers with `service_key`."""
    with _serving(
        serve_dsn,
        AUTHSVC_SERVICE_KEYS=service_key.entry,
        AUTHSVC_REQUIRE_SERVICE_CREDENTIALS="true",
    ) as serve:
        yield serve


@contextmanager
def _serving(dsn: str, **settings: str) -> Iterator[ServeProcess]:
    # Markers are health checks, whose access-log lines are at DEBUG.
    env = authsvc_env(dsn, AUTHSVC_LOG_LEVEL="DEBUG", **settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "authsvc", "serve", "--host", "127.0.0.1", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    serve = ServeProcess(process)
    ports: queue.Queue[int] = queue.Queue()
    reader = threading.Thread(target=_read_stderr, args=(serve, ports), daemon=True)
    reader.start()
    try:
        serve.port = ports.get(timeout=START_TIMEOUT)
        with grpc.insecure_channel(serve.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for answer in health.Watch(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=START_TIMEOUT
            ):
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    break
        yield serve
    finally:
        # Nothing to shut down gracefully: its database is thrown away with the test run.
        process.kill()
        process.wait()
        reader.join(timeout=START_TIMEOUT)
        assert process.stderr is not None
        process.stderr.close()
