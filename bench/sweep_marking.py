"""What keeping tombstones costs the sweeper. This release marks N expired sessions ended,
then (after the retention) deletes the tombstones and their refresh tokens; the release
before deleted them and their tokens at once. Each on its own fresh seed of N expired
sessions with one token each, in one embedded PostgreSQL, with no other load and no pause
between batches, so the figures are the statements' own cost.

    .venv/bin/python -m bench.sweep_marking --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from authsvc.embedded_db import start_embedded_postgres
from authsvc.store.migrate import apply_migrations
from authsvc.store.pool import Connection
from authsvc.store.sweep import (
    _DELETE_REVOKED_SESSIONS,
    _DELETE_TOKENS_OF_REVOKED_SESSIONS,
    _MARK_EXPIRED_SESSIONS,
)
from bench.seed import Seeder

# The release before's sweep of expired sessions (authsvc/store/sweep.py at 8a28eea): tokens
# first, in batches, then each session once it had none.
_PREVIOUS_DELETE_TOKENS = """
DELETE FROM refresh_tokens WHERE id = ANY(ARRAY(
    SELECT id FROM refresh_tokens WHERE expires_at <= $1
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
"""
_PREVIOUS_DELETE_SESSIONS = """
DELETE FROM sessions WHERE id = ANY(ARRAY(
    SELECT id FROM sessions s WHERE idle_expires_at <= $1 AND revoked_at IS NULL
      AND NOT EXISTS (SELECT FROM refresh_tokens t WHERE t.session_id = s.id OFFSET 0)
    LIMIT $2 FOR UPDATE SKIP LOCKED
))
RETURNING created_at, idle_expires_at, expires_at
"""
_BATCH = 1000


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def _mark(conn: Connection) -> tuple[int, float]:
    started, marked = time.perf_counter(), 0
    while True:
        rows = await conn.fetch(_MARK_EXPIRED_SESSIONS, datetime.now(UTC), _BATCH)
        marked += len(rows)
        if len(rows) < _BATCH:
            return marked, time.perf_counter() - started


async def _delete_tombstones(conn: Connection) -> tuple[int, float]:
    started, deleted = time.perf_counter(), 0
    while True:
        now = datetime.now(UTC)
        tokens = _count(await conn.execute(_DELETE_TOKENS_OF_REVOKED_SESSIONS, now, _BATCH))
        sessions = _count(await conn.execute(_DELETE_REVOKED_SESSIONS, now, _BATCH))
        deleted += sessions
        if max(tokens, sessions) < _BATCH:
            return deleted, time.perf_counter() - started


async def _delete(conn: Connection) -> tuple[int, float]:
    started, deleted = time.perf_counter(), 0
    while True:
        now = datetime.now(UTC)
        tokens = _count(await conn.execute(_PREVIOUS_DELETE_TOKENS, now, _BATCH))
        sessions = len(await conn.fetch(_PREVIOUS_DELETE_SESSIONS, now, _BATCH))
        deleted += sessions
        if max(tokens, sessions) < _BATCH:
            return deleted, time.perf_counter() - started


async def _run(dsn: str, rows: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await apply_migrations(pool)
        seeder = Seeder(pool, "", "unused")
        runs = (
            (
                "this release",
                (("mark ended", _mark), ("then delete tombstones", _delete_tombstones)),
            ),
            ("previous release", (("delete at once", _delete),)),
        )
        for release, steps in runs:
            await seeder.expired_sessions(rows)
            await pool.execute("VACUUM ANALYZE sessions, refresh_tokens")
            for name, sweep in steps:
                async with pool.acquire() as conn:
                    done, seconds = await sweep(conn)
                rate = done / seconds
                print(f"{release}, {name}: {done} sessions in {seconds:.1f} s = {rate:,.0f}/s")
            await pool.execute("TRUNCATE users CASCADE")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="expired sessions per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authsvc-sweep-marking-") as tmp:
        embedded = start_embedded_postgres(Path(tmp) / "pg")
        try:
            asyncio.run(embedded.ensure_service_database())
            asyncio.run(_run(embedded.dsn(), args.rows))
        finally:
            embedded.stop()


if __name__ == "__main__":
    main()
