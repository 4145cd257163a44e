"""What migration 0023's triggers cost a session update when webhooks are off: the update
Refresh makes (last_active_at and idle_expires_at of one session), timed with the triggers
as migrated and with them disabled, in alternating rounds on one embedded PostgreSQL.

Run: python -m bench.webhook_triggers [--updates 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from authsvc.embedded_db import start_embedded_postgres
from authsvc.store.migrate import apply_migrations

_TRIGGERS = ("sessions_webhook_refreshed_after_idle", "sessions_webhook_ended")
_TOUCH = "UPDATE sessions SET last_active_at = $2, idle_expires_at = $3 WHERE id = $1"


async def _seed(conn: asyncpg.Connection) -> uuid.UUID:
    user_id, session_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    await conn.execute(
        "INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)"
        " VALUES ($1, 'bench@example.com', '', 'unused', $2, $2)",
        user_id,
        now,
    )
    await conn.execute(
        "INSERT INTO sessions (id, user_id, created_at, last_active_at, idle_expires_at,"
        " expires_at, remember_me, user_agent, ip_address, device_type, browser, os,"
        " device_name) VALUES ($1, $2, $3, $3, $4, $5, false, '', '', 'unknown', '', '', '')",
        session_id,
        user_id,
        now,
        now + timedelta(days=7),
        now + timedelta(days=30),
    )
    return session_id


async def _round(conn: asyncpg.Connection, session_id: uuid.UUID, updates: int) -> float:
    """Microseconds per update."""
    at = datetime.now(UTC)
    started = time.perf_counter()
    for i in range(updates):
        moment = at + timedelta(milliseconds=i)
        await conn.execute(_TOUCH, session_id, moment, moment + timedelta(days=1))
    return (time.perf_counter() - started) / updates * 1e6


async def _measure(dsn: str, updates: int, rounds: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    await apply_migrations(pool)
    await pool.close()
    # Without waiting on the disk's flush at each commit, whose jitter on a shared machine
    # is larger than what is measured.
    conn = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "off"})
    try:
        session_id = await _seed(conn)
        timings: dict[str, list[float]] = {"triggers": [], "disabled": []}
        for _ in range(rounds):
            for variant in timings:
                action = "ENABLE" if variant == "triggers" else "DISABLE"
                for trigger in _TRIGGERS:
                    await conn.execute(f"ALTER TABLE sessions {action} TRIGGER {trigger}")
                timings[variant].append(await _round(conn, session_id, updates))
    finally:
        await conn.close()
    for variant, values in timings.items():
        print(
            f"{variant:>9}: {statistics.median(values):.1f} us per update "
            f"(min {min(values):.1f}, max {max(values):.1f}; {rounds} rounds of {updates})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_triggers")
    parser.add_argument("--updates", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as data_dir:
        embedded = start_embedded_postgres(Path(data_dir))
        try:
            asyncio.run(embedded.ensure_service_database())
            asyncio.run(_measure(embedded.dsn(), args.updates, args.rounds))
        finally:
            embedded.stop()


if __name__ == "__main__":
    main()
