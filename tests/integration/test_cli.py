"""`python -m authsvc ...` as an operator runs it: a real process on a fresh database."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import authsvc
from authsvc import config as config_module
from authsvc.core.clock import FrozenClock
from authsvc.store.migrate import apply_migrations, bundled_migrations
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


async def test_cli_sweep_marks_expired_sessions_ended_and_exits_0(
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
        remaining = {
            str(row["id"])
            for row in await pool.fetch("SELECT id FROM sessions WHERE revoked_at IS NULL")
        }
    assert remaining == {live.session_id}
    assert expired.session_id not in remaining
    assert "marked 1 expired sessions ended; deleted 0 refresh tokens, " in run.stdout
    assert "0 revoked sessions, " in run.stdout


async def test_cli_sweep_on_a_fresh_database_exits_0(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc("sweep", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr


async def test_cli_bad_setting_exits_2_naming_the_variable(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc("migrate", env=authsvc_env(dsn, AUTHSVC_PORT="notaport"))

    assert run.code == 2
    assert "AUTHSVC_PORT" in run.stderr


async def test_cli_bad_integer_is_a_sentence_not_a_python_error(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc("migrate", env=authsvc_env(dsn, AUTHSVC_PORT="abc"))

    assert run.code == 2
    assert run.stderr.strip().endswith(
        "authsvc: configuration error: AUTHSVC_PORT must be a whole number, like 50051; got 'abc'"
    )


async def test_cli_flag_overrides_the_environment_variable(new_database: NewDatabase) -> None:
    dsn = await new_database()

    run = await run_authsvc(
        "migrate",
        "--db-statement-timeout",
        "5s",
        env=authsvc_env(dsn, AUTHSVC_DB_STATEMENT_TIMEOUT="soon"),
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


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
async def test_cli_audit_with_a_bad_limit_is_a_usage_error(pg_dsn: str, limit: str) -> None:
    run = await run_authsvc("audit", "--limit", limit, env=authsvc_env(pg_dsn))

    assert run.code == 2
    assert "--limit" in run.stderr
    assert "Traceback" not in run.stderr


async def _versions(dsn: str) -> list[int]:
    async with pool_on(dsn, max_size=2) as pool:
        rows = await pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [row["version"] for row in rows]


def _log_lines(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _events(stdout: str) -> list[tuple[str, str | None]]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    return [(line["event"], line["user_id"]) for line in lines]


async def test_cli_version_prints_the_package_version() -> None:
    run = await run_authsvc("--version", env=authsvc_env(None))

    assert (run.code, run.stdout) == (0, f"authsvc {authsvc.__version__}\n")


async def test_cli_audit_help_shows_its_own_options_and_not_the_servers() -> None:
    run = await run_authsvc("audit", "--help", env=authsvc_env(None))

    assert run.code == 0, run.stderr
    for option in ("--email", "--event", "--since", "--limit", "--database-url", "--log-level"):
        assert option in run.stdout
    for option in ("--port", "--workers", "--argon2-time-cost", "--sign-ups-per-ip"):
        assert option not in run.stdout


async def test_cli_serve_help_shows_the_server_settings() -> None:
    run = await run_authsvc("serve", "--help", env=authsvc_env(None))

    assert run.code == 0, run.stderr
    for option in ("--port", "--workers", "--argon2-time-cost", "--database-url"):
        assert option in run.stdout


async def test_cli_warns_about_an_unknown_variable_naming_the_closest_setting() -> None:
    run = await run_healthcheck(unused_port(), acess_token_ttl="5m")

    warnings = [line for line in _log_lines(run.stderr) if line.get("event") == "unknown_setting"]
    assert [(w["variable"], w["did_you_mean"]) for w in warnings] == [
        ("AUTHSVC_ACESS_TOKEN_TTL", "AUTHSVC_ACCESS_TOKEN_TTL")
    ]


async def test_cli_audit_does_not_migrate_a_database_whose_schema_is_behind(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    async with pool_on(dsn, max_size=2) as pool:
        await apply_migrations(pool, bundled_migrations()[:-1])
    before = await _versions(dsn)

    run = await run_authsvc("audit", env=authsvc_env(dsn))

    assert run.code == 1
    assert "run `authsvc migrate` first" in run.stderr
    assert await _versions(dsn) == before


async def test_cli_users_create_records_a_user_created_event(new_database: NewDatabase) -> None:
    dsn = await new_database()
    created = await run_authsvc(
        "users", "create", "--email", "x@y.io", env=authsvc_env(dsn), stdin=PASSWORD + "\n"
    )
    assert created.code == 0, created.stderr

    run = await run_authsvc("audit", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    [line] = [json.loads(line) for line in run.stdout.splitlines()]
    assert line["event"] == "user_created"
    assert line["user_id"] in created.stdout
    assert line["user_agent"].startswith("authsvc-cli (")


async def _two_users_two_days_apart(launch: Launch, dsn: str) -> tuple[str, str]:
    """Ada registers (and logs in) two days ago, Bob now; their user ids."""
    clock = FrozenClock(datetime.now(UTC) - timedelta(days=2))
    async with _serving(launch, dsn, clock) as stub:
        ada = await register(stub, email="ada@example.com")
        clock.advance(timedelta(days=2))
        bob = await register(stub, email="bob@example.com")
    return ada.user_id, bob.user_id


async def test_cli_audit_email_finds_the_account_by_its_canonical_form(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database(migrated=True)
    ada, _ = await _two_users_two_days_apart(launch, dsn)

    run = await run_authsvc(
        "audit",
        "--email",
        " ADA@Example.COM. ",
        env=authsvc_env(dsn, AUTHSVC_LOG_LEVEL="DEBUG"),
    )

    assert run.code == 0, run.stderr
    assert _events(run.stdout) == [("login_succeeded", ada), ("user_registered", ada)]
    assert "ADA@Example.COM" not in run.stderr


async def test_cli_audit_email_without_an_account_says_so_without_the_email(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database(migrated=True)

    run = await run_authsvc("audit", "--email", "nobody@example.com", env=authsvc_env(dsn))

    assert run.code == 1
    assert run.stderr.strip() == "authsvc: no account has that email"


async def test_cli_audit_event_keeps_only_events_of_that_name(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database(migrated=True)
    ada, bob = await _two_users_two_days_apart(launch, dsn)

    run = await run_authsvc("audit", "--event", "user_registered", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    assert _events(run.stdout) == [("user_registered", bob), ("user_registered", ada)]


@pytest.mark.parametrize("since", ["1d", "RECENT"])
async def test_cli_audit_since_keeps_only_later_events(
    new_database: NewDatabase, launch: Launch, since: str
) -> None:
    dsn = await new_database(migrated=True)
    _, bob = await _two_users_two_days_apart(launch, dsn)
    if since == "RECENT":
        since = (datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z")

    run = await run_authsvc("audit", "--since", since, env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    assert _events(run.stdout) == [("login_succeeded", bob), ("user_registered", bob)]


@pytest.mark.parametrize("since", ["yesterday", "2026-01-01T00:00:00"])
async def test_cli_audit_since_without_a_time_or_duration_is_a_usage_error(
    pg_dsn: str, since: str
) -> None:
    run = await run_authsvc("audit", "--since", since, env=authsvc_env(pg_dsn))

    assert run.code == 2
    assert "--since: must" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "command",
    [("serve",), ("migrate",), ("users", "create", "--email=a@b.c")],
    ids=["serve", "migrate", "users-create"],
)
async def test_cli_without_a_database_url_where_the_embedded_one_is_off_exits_2_starting_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    # What the container image sets: a database inside the container would die with it.
    data_dir = tmp_path / "data"
    env = authsvc_env(None, AUTHSVC_EMBEDDED_DATABASE="false", AUTHSVC_DATA_DIR=str(data_dir))

    run = await run_authsvc(*command, env=env, stdin="a password\n")

    assert run.code == 2, run.stderr
    assert "AUTHSVC_DATABASE_URL is not set" in run.stderr
    assert "AUTHSVC_EMBEDDED_DATABASE" in run.stderr
    assert not data_dir.exists()
