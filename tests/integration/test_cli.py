"""`python -m authsvc ...` as an operator runs it: a real process on a fresh database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from authsvc import config as config_module
from authsvc.core.clock import FrozenClock
from authsvc.store.migrate import bundled_migrations
from tests.conftest import Launch, NewDatabase, dsn_for_database, pool_on
from tests.helpers import PASSWORD, Stub, login, register, unused_port
from tests.processes import authsvc_env, run_authsvc, run_healthcheck, server_group

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def _serving(
    launch: Launch, dsn: str, clock: FrozenClock | None = None
) -> AsyncIterator[Stub]:
    """An in-process server on `dsn` (the test's view of what the CLI wrote), stopped on exit."""
    async with pool_on(dsn) as pool:
        launched = await launch(database_url=dsn, server_pool=pool, server_clock=clock)
        try:
            yield launched.stub
        finally:
            await launched.server.stop(None)


async def _signing_keys(dsn: str) -> dict[str, datetime | None]:
    async with pool_on(dsn, max_size=2) as pool:
        rows = await pool.fetch("SELECT kid, retired_at FROM signing_keys")
    return {row["kid"]: row["retired_at"] for row in rows}


async def test_cli_migrate_applies_every_migration(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    async with pool_on(dsn, max_size=2) as pool:
        versions = [r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations")]
    assert sorted(versions) == [m.version for m in bundled_migrations()]


async def test_cli_migrate_second_run_reports_up_to_date(new_database: NewDatabase) -> None:
    dsn = await new_database()
    first = await run_authsvc("migrate", env=authsvc_env(dsn))

    second = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert (first.code, second.code) == (0, 0), (first.stderr, second.stderr)
    assert "up to date" not in first.stdout
    assert "up to date" in second.stdout


async def test_cli_users_create_makes_an_account_that_can_log_in(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database()

    run = await run_authsvc(
        "users", "create", "--email", "x@y.io", env=authsvc_env(dsn), stdin=PASSWORD + "\n"
    )

    assert run.code == 0, run.stderr
    async with _serving(launch, dsn) as stub:
        session = await login(stub, email="x@y.io", password=PASSWORD)
    assert session.user_id in run.stdout
    assert session.access_token


async def test_cli_users_create_never_shows_the_password(new_database: NewDatabase) -> None:
    dsn = await new_database()
    password = "Un1que-Secret-Phrase-4917"

    run = await run_authsvc(
        "users",
        "create",
        "--email",
        "x@y.io",
        env=authsvc_env(dsn, AUTHSVC_LOG_LEVEL="DEBUG"),
        stdin=password + "\n",
    )

    assert run.code == 0, run.stderr
    assert password not in run.stdout
    assert password not in run.stderr
    assert all(password not in arg for arg in run.argv)


async def test_cli_keys_rotate_adds_a_key_and_retires_the_active_one(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    setup = await run_authsvc("keys", "rotate", env=authsvc_env(dsn))
    assert setup.code == 0, setup.stderr
    before = await _signing_keys(dsn)
    [previously_active] = [kid for kid, retired in before.items() if retired is None]

    run = await run_authsvc("keys", "rotate", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    after = await _signing_keys(dsn)
    [added] = set(after) - set(before)
    assert [kid for kid, retired in after.items() if retired is None] == [added]
    assert after[previously_active] is not None
    assert added in run.stdout


async def test_cli_sweep_deletes_expired_sessions_and_exits_0(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database()
    # Sessions made 30 days ago (idle timeout 7d) are expired by the CLI's real clock.
    clock = FrozenClock(datetime.now(UTC) - timedelta(days=30))
    async with _serving(launch, dsn, clock) as stub:
        expired = await register(stub, email="old@example.com")
        clock.advance(timedelta(days=30))
        live = await register(stub, email="new@example.com")

    run = await run_authsvc("sweep", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    async with pool_on(dsn, max_size=2) as pool:
        remaining = {str(row["id"]) for row in await pool.fetch("SELECT id FROM sessions")}
    assert remaining == {live.session_id}
    assert expired.session_id not in remaining
    assert "1 refresh tokens, " in run.stdout
    assert "1 expired sessions, 0 revoked sessions, " in run.stdout


async def test_cli_sweep_on_a_fresh_database_exits_0(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc("sweep", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr


async def test_cli_bad_setting_exits_2_naming_the_variable(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc("migrate", env=authsvc_env(dsn, AUTHSVC_PORT="notaport"))

    assert run.code == 2
    assert "AUTHSVC_PORT" in run.stderr


async def test_cli_flag_overrides_the_environment_variable(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc(
        "migrate", "--port", "50051", env=authsvc_env(dsn, AUTHSVC_PORT="notaport")
    )

    assert run.code == 0, run.stderr


async def test_cli_serve_serves_until_sigterm_then_exits_0(new_database: NewDatabase) -> None:
    dsn = await new_database()
    grace = config_module.from_env(environ={}).shutdown_grace
    async with server_group() as group:
        server = await group.start_ready(dsn)
        registered = await register(server.stub)

        server.terminate()
        code = await server.wait(within=grace.total_seconds())

    assert registered.session_id
    assert code == 0


async def _healthcheck(port: int) -> tuple[int, str, str]:
    run = await run_healthcheck(port)
    return run.code, run.stdout.strip(), run.stderr.strip()


async def test_cli_healthcheck_exits_1_while_the_server_is_not_serving(
    pg_admin_dsn: str,
) -> None:
    # A server whose database does not exist listens but stays NOT_SERVING.
    missing = dsn_for_database(pg_admin_dsn, f"missing_{uuid.uuid4().hex}")
    async with server_group() as group:
        server = await group.start(missing)

        code, stdout, _ = await _healthcheck(server.port)

    assert (code, stdout) == (1, "NOT_SERVING")


async def test_cli_healthcheck_exits_1_when_nothing_answers() -> None:
    code, _, stderr = await _healthcheck(unused_port())

    assert (code, stderr) == (1, "unhealthy: UNAVAILABLE")


async def test_cli_healthcheck_exits_0_and_says_serving_on_a_ready_server(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    async with server_group() as group:
        server = await group.start_ready(dsn)

        code, stdout, _ = await _healthcheck(server.port)

    assert (code, stdout) == (0, "SERVING")


async def test_cli_command_without_a_reachable_database_says_so_and_exits_1() -> None:
    closed = unused_port()

    run = await run_authsvc(
        "migrate", env=authsvc_env(f"postgresql://authsvc@127.0.0.1:{closed}/authsvc")
    )

    assert run.code == 1
    assert run.stderr.strip() == "authsvc: DATABASE_UNAVAILABLE: database unavailable"


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
async def test_cli_audit_with_a_bad_limit_is_a_usage_error(pg_dsn: str, limit: str) -> None:
    run = await run_authsvc("audit", "--limit", limit, env=authsvc_env(pg_dsn))

    assert run.code == 2
    assert "--limit" in run.stderr
    assert "Traceback" not in run.stderr
