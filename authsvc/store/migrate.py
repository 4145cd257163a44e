"""Apply the numbered SQL files in authsvc/migrations, once each, in order.

Holds a session-level advisory lock for the whole run, so replicas that start
together queue up and the later ones find nothing left to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection, session_advisory_lock

__all__ = ["Migration", "apply_migrations", "bundled_migrations", "pending_migrations"]

_log = logging.getLogger(__name__)

# Arbitrary constant shared by every replica: "authsvc migrate".
_MIGRATE_LOCK_KEY = 0x61757468_0001

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_APPLIED_VERSIONS = "SELECT version FROM schema_migrations"
_HAS_LEDGER = "SELECT to_regclass('schema_migrations') IS NOT NULL"
_RECORD = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """The migrations shipped in the package, sorted by version."""
    found = []
    for entry in resources.files("authsvc.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        found.append(
            Migration(version=int(number), name=rest.removesuffix(".sql"), sql=entry.read_text())
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return found


async def apply_migrations(
    pool: asyncpg.Pool, migrations: list[Migration] | None = None
) -> list[int]:
    """Bring the schema up to date; return the versions this call applied.

    Replicas starting together queue on one advisory lock, so each migration
    is applied once.
    """
    pending_source = bundled_migrations() if migrations is None else migrations
    async with (
        translate_errors(),
        session_advisory_lock(pool, _MIGRATE_LOCK_KEY) as conn,
    ):
        return await _apply_pending(conn, pending_source)


async def pending_migrations(pool: asyncpg.Pool) -> list[int]:
    """The bundled versions the database has not applied, found without writing anything
    (no ledger, no lock): for commands that only read."""
    async with translate_errors(), pool.acquire() as conn:
        applied = (
            {row["version"] for row in await conn.fetch(_APPLIED_VERSIONS)}
            if await conn.fetchval(_HAS_LEDGER)
            else set()
        )
    return [m.version for m in bundled_migrations() if m.version not in applied]


async def _apply_pending(conn: Connection, migrations: list[Migration]) -> list[int]:
    await conn.execute(_CREATE_LEDGER)
    applied = {row["version"] for row in await conn.fetch(_APPLIED_VERSIONS)}
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(_RECORD, migration.version, migration.name)
        _log.info(
            "migration applied",
            extra={"event": "migration_applied", "version": migration.version},
        )
        done.append(migration.version)
    return done
