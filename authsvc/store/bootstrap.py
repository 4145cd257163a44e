"""Create the service's role and database on a server we own (the embedded one)."""

from __future__ import annotations

import contextlib

import asyncpg

from authsvc.store.errors import translate_errors

__all__ = ["ensure_database", "ensure_service_database"]

_EXISTS = "SELECT true FROM pg_database WHERE datname = $1"
# Held while one process bootstraps, so processes starting together do it once each in turn.
_BOOTSTRAP_LOCK = "SELECT pg_advisory_lock(7361626)"
_ROLE_EXISTS = "SELECT true FROM pg_roles WHERE rolname = $1"
# DDL takes no parameters: the server quotes them with format(%I, %L).
_CREATE_ROLE = "SELECT format('CREATE ROLE %I', $1::text)"
# Every start: a role that can log in and do nothing beyond what it owns, with the password
# from the service's pgpass file (so a lost file is repaired by making a new one).
_SET_ROLE = (
    "SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
    " NOREPLICATION NOBYPASSRLS PASSWORD %L', $1::text, $2::text)"
)
_CREATE_OWNED_DATABASE = "SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)"
_SET_DATABASE_OWNER = "SELECT format('ALTER DATABASE %I OWNER TO %I', $1::text, $2::text)"
_CLOSE_DATABASE = "SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', $1::text)"
# Objects an earlier version's superuser made in the public schema pass to the role, so its
# migrations can alter them. (Sequences behind identity columns follow their table.)
_ADOPT_OBJECTS = """
SELECT format('ALTER %s %s OWNER TO %I', kind, name, $1::text) FROM (
    SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                          WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END AS kind,
           c.oid::regclass::text AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND c.relowner <> $1::regrole
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype IN ('a', 'i'))
    UNION ALL
    SELECT 'FUNCTION', p.oid::regprocedure::text
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'public' AND p.proowner <> $1::regrole
) AS owned_by_others
"""


async def ensure_database(admin_dsn: str, name: str) -> None:
    async with translate_errors(admin_dsn):
        conn = await asyncpg.connect(admin_dsn)
        try:
            if not await conn.fetchval(_EXISTS, name):
                # CREATE DATABASE takes no parameters; quote_ident-equivalent quoting.
                quoted = '"' + name.replace('"', '""') + '"'
                # Another process may create it between the check and now.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f"CREATE DATABASE {quoted}")
        finally:
            await conn.close()


async def ensure_service_database(
    admin_dsn: str, admin_dsn_in_database: str, *, database: str, role: str, password: str
) -> None:
    """Make `role` a plain login role (never a superuser) with `password`, owning `database`
    and everything in its public schema; only it (and superusers) may connect there.

    Both DSNs are a superuser's: on a maintenance database, and on `database` (to take
    over what an earlier version made there)."""
    async with translate_errors(admin_dsn):
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(_BOOTSTRAP_LOCK)
            if not await conn.fetchval(_ROLE_EXISTS, role):
                await conn.execute(await conn.fetchval(_CREATE_ROLE, role))
            await conn.execute(await conn.fetchval(_SET_ROLE, role, password))
            if await conn.fetchval(_EXISTS, database):
                await conn.execute(await conn.fetchval(_SET_DATABASE_OWNER, database, role))
            else:
                await conn.execute(await conn.fetchval(_CREATE_OWNED_DATABASE, database, role))
            await conn.execute(await conn.fetchval(_CLOSE_DATABASE, database))
            inside = await asyncpg.connect(admin_dsn_in_database)
            try:
                for (statement,) in await inside.fetch(_ADOPT_OBJECTS, role):
                    await inside.execute(statement)
            finally:
                await inside.close()
        finally:
            await conn.close()
