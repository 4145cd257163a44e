"""What an operator is told when the database cannot be used: by a CLI command (one line,
no traceback, the password never shown) and by `serve` (a log line saying what failed, and
retries that heal once the operator fixes it, as after an outage)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from authsvc.store.bootstrap import ensure_service_database
from tests.conftest import dsn_for_database
from tests.helpers import unused_port
from tests.processes import (
    CommandRun,
    ServerProcess,
    authsvc_env,
    eventually,
    run_authsvc,
    server_group,
)

pytestmark = pytest.mark.asyncio

PASSWORD = "not-the-password-4f1c"


def as_role(dsn: str, role: str, password: str) -> str:
    """`dsn` with another role and password in it (any passfile it names goes unused)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


def assert_one_line_without_the_password(run: CommandRun) -> None:
    assert run.code == 1
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert PASSWORD not in run.stderr
    assert ":***@" in run.stderr


async def test_cli_with_nothing_listening_says_connection_refused() -> None:
    dsn = f"postgresql://authsvc:{PASSWORD}@127.0.0.1:{unused_port()}/authsvc"

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.stderr.startswith("authsvc: DATABASE_UNAVAILABLE: connection refused")
    assert_one_line_without_the_password(run)


async def test_cli_with_an_unknown_host_says_unknown_host() -> None:
    dsn = f"postgresql://authsvc:{PASSWORD}@no-such-host.invalid/authsvc"

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.stderr.startswith("authsvc: DATABASE_UNAVAILABLE: unknown host")
    assert_one_line_without_the_password(run)


async def test_cli_with_a_missing_database_says_no_such_database(pg_admin_dsn: str) -> None:
    missing = f"missing_{uuid.uuid4().hex}"
    dsn = dsn_for_database(pg_admin_dsn, missing)

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.code == 1
    assert run.stderr.startswith("authsvc: DATABASE_UNAVAILABLE: no such database")
    assert missing in run.stderr
    assert "Traceback" not in run.stderr


async def test_cli_with_a_wrong_password_says_authentication_failed(pg_dsn: str) -> None:
    dsn = as_role(pg_dsn, "postgres", PASSWORD)

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.stderr.startswith("authsvc: DATABASE_UNAVAILABLE: authentication failed")
    assert_one_line_without_the_password(run)


async def test_cli_with_a_role_that_does_not_exist_says_authentication_failed(
    pg_dsn: str,
) -> None:
    dsn = as_role(pg_dsn, f"nobody_{uuid.uuid4().hex[:8]}", PASSWORD)

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.stderr.startswith("authsvc: DATABASE_UNAVAILABLE: authentication failed")
    assert_one_line_without_the_password(run)


async def _role_with_password(pg_admin_dsn: str, password: str) -> tuple[str, str]:
    """A new login role with `password`, owning a new database: (its DSN sans role, role)."""
    name = f"authsvc_{uuid.uuid4().hex[:12]}"
    database_dsn = dsn_for_database(pg_admin_dsn, name)
    await _set_password(pg_admin_dsn, name, password)
    return database_dsn, name


async def _set_password(pg_admin_dsn: str, name: str, password: str) -> None:
    """Role and database `name`, the role logging in with `password` (the embedded
    database's own bootstrap, as an operator's fix would do)."""
    await ensure_service_database(
        pg_admin_dsn,
        dsn_for_database(pg_admin_dsn, name),
        database=name,
        role=name,
        password=password,
    )


@asynccontextmanager
async def _serving_with_a_wrong_password(
    pg_admin_dsn: str,
) -> AsyncIterator[tuple[ServerProcess, str]]:
    """`authsvc serve` as a role whose password it has wrong, once it has said why it is not
    ready: (the server, the role)."""
    database_dsn, role = await _role_with_password(pg_admin_dsn, "the-right-password")
    async with server_group() as group:
        server = await group.start(as_role(database_dsn, role, PASSWORD))

        async def said_why() -> bool:
            return "database not ready" in server.stderr_tail

        await eventually(said_why)
        yield server, role


async def test_serve_with_a_wrong_password_logs_authentication_failed_without_it(
    pg_admin_dsn: str,
) -> None:
    async with _serving_with_a_wrong_password(pg_admin_dsn) as (server, _):
        pass

    assert "authentication failed" in server.stderr_tail
    assert PASSWORD not in server.stderr_tail


async def test_serve_with_a_wrong_password_gets_ready_once_the_password_is_fixed(
    pg_admin_dsn: str,
) -> None:
    async with _serving_with_a_wrong_password(pg_admin_dsn) as (server, role):
        await _set_password(pg_admin_dsn, role, PASSWORD)

        await server.until_serving()
