"""What refresh lineage adds to Refresh's one statement, without gRPC or the server.

On an embedded PostgreSQL with the real migrations, each of `--rounds` fresh sessions has
its current token rotated by the statement Refresh runs (`_ROTATE_IF_CURRENT`), its
lineage step written for even rounds and skipped for odd ones (as with
AUTHSVC_REFRESH_LINEAGE=false), one connection, serially, so both variants see the same
drift of a shared machine. Prints the median time per statement of each, the write-ahead
log each writes (EXPLAIN ANALYZE's WAL records and bytes: exact, whatever the machine's load),
and the disk a step takes (with a 77-character user agent).

    .venv/bin/python -m bench.lineage_statement [--rounds 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from authsvc.embedded_db import start_embedded_postgres
from authsvc.store.migrate import apply_migrations
from authsvc.store.pool import Connection
from authsvc.store.sessions import _ROTATE_IF_CURRENT

_IDLE_TIMEOUT = timedelta(days=7)
_SEED = """
WITH u AS (
    INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
    VALUES (gen_random_uuid(), 'bench@example.com', '', 'unused', $1, $1) RETURNING id
), s AS (
    INSERT INTO sessions (id, user_id, created_at, last_active_at, idle_expires_at,
        expires_at, remember_me, user_agent, ip_address, device_type, browser, os, device_name)
    SELECT gen_random_uuid(), u.id, $1, $1, $1 + interval '7 days', $1 + interval '7 days',
        false, 'bench/1.0', '127.0.0.1', 'other', '', '', ''
    FROM u CROSS JOIN generate_series(1, $2)
    RETURNING id, user_id, idle_expires_at
)
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
SELECT gen_random_uuid(), id, sha256(convert_to(id::text, 'UTF8')), $1, idle_expires_at, user_id
FROM s
"""


# What the steps take on disk, table and index, per step.
_STORED = """
SELECT pg_total_relation_size('refresh_lineage') AS bytes,
       (SELECT count(*) FROM refresh_lineage) AS steps
"""


def _args(token_hash: bytes, now: datetime, lineage: bool) -> tuple[object, ...]:
    return (
        token_hash,
        now,
        _IDLE_TIMEOUT,
        b"\0" * 60,  # the size of a sealed successor box
        uuid.uuid4(),
        hashlib.sha256(uuid.uuid4().bytes).digest(),
        "bench-kid",  # the signing key the session's latest access token names
        "203.0.113.7",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
        lineage,
        None,  # no idempotency key
    )


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(child for plan in node.get("Plans", []) for child in _nodes(plan))]


async def _wal(conn: Connection, token_hash: bytes, lineage: bool) -> dict[str, int]:
    """The WAL the statement's own plan nodes write (the CTEs' are nodes of their own)."""
    explained = await conn.fetchval(
        f"EXPLAIN (ANALYZE, WAL, FORMAT JSON) {_ROTATE_IF_CURRENT}",
        *_args(token_hash, datetime.now(UTC), lineage),
    )
    nodes = _nodes(json.loads(explained)[0]["Plan"])
    writers = [node for node in nodes if node["Node Type"] == "ModifyTable"]
    return {
        "wal_records": sum(node["WAL Records"] for node in writers),
        "wal_bytes": sum(node["WAL Bytes"] for node in writers),
    }


async def measure(dsn: str, rounds: int) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        await apply_migrations(pool)
        async with pool.acquire() as conn:
            await conn.execute(_SEED, datetime.now(UTC), rounds + 4)
            await conn.execute("ANALYZE")
            hashes = [
                bytes(row["token_hash"])
                for row in await conn.fetch("SELECT token_hash FROM refresh_tokens")
            ]
            # Two warm-up rotations, then the WAL of one of each; then the timed rounds.
            for lineage, token_hash in zip((True, False), hashes[:2], strict=True):
                await conn.fetchrow(
                    _ROTATE_IF_CURRENT, *_args(token_hash, datetime.now(UTC), lineage)
                )
            wal = {
                "on": await _wal(conn, hashes[2], True),
                "off": await _wal(conn, hashes[3], False),
            }
            times: dict[str, list[float]] = {"on": [], "off": []}
            for index, token_hash in enumerate(hashes[4:]):
                lineage = index % 2 == 0
                args = _args(token_hash, datetime.now(UTC), lineage)
                started = time.perf_counter()
                row = await conn.fetchrow(_ROTATE_IF_CURRENT, *args)
                times["on" if lineage else "off"].append(time.perf_counter() - started)
                if row is None or row["idle_expires_at"] is None:
                    raise RuntimeError("a seeded token did not rotate")
            stored = await conn.fetchrow(_STORED)
            assert stored is not None
    finally:
        await pool.close()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    bytes_per_step = stored["bytes"] / stored["steps"]
    return {"rounds": rounds, "median_ms": medians, "wal": wal, "bytes_per_step": bytes_per_step}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        embedded = start_embedded_postgres(Path(tmp) / "pg")
        try:
            asyncio.run(embedded.ensure_service_database())
            figures = asyncio.run(measure(embedded.dsn(), args.rounds))
        finally:
            embedded.stop()
    on, off = figures["median_ms"]["on"], figures["median_ms"]["off"]
    wal_on, wal_off = figures["wal"]["on"], figures["wal"]["off"]
    print(
        f"Refresh's statement, {figures['rounds']} rounds, lineage on/off in turns:\n"
        f"  median {on:.3f} ms with the step, {off:.3f} ms without ({on / off:.3f}x)\n"
        f"  WAL {wal_on['wal_records']} records, {wal_on['wal_bytes']} bytes with the step; "
        f"{wal_off['wal_records']} records, {wal_off['wal_bytes']} bytes without\n"
        f"  {figures['bytes_per_step']:.0f} bytes on disk per step (table and index)"
    )


if __name__ == "__main__":
    main()
