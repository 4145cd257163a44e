"""Create the service's database on a server we own (the embedded one)."""

from __future__ import annotations

import contextlib

import asyncpg

from authsvc.store.errors import translate_errors

__all__ = ["ensure_database"]

_EXISTS = "SELECT true FROM pg_database WHERE datname = $1"


async def ensure_database(admin_dsn: str, name: str) -> None:
    async with translate_errors():
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
