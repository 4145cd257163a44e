"""Migration 0012: legacy emails become canonical; two that collide both survive; the email
lookup of migration 0026 follows each rewrite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from authsvc.app import migrate_database
from authsvc.core.clock import FrozenClock
from authsvc.store.migrate import apply_migrations, bundled_migrations
from tests.conftest import NewDatabase, pool_on

pytestmark = pytest.mark.asyncio

_CANONICAL_EMAILS = 12
_T0 = datetime(2024, 1, 1, tzinfo=UTC)

# (email as an earlier release stored it, what it must be after the migration), oldest first.
LEGACY_ROWS = [
    ("jos\u00e9@example.com", "jos\u00e9@example.com"),  # NFC: canonical already
    ("jose\u0301@example.com", "jose\u0301@example.com"),  # NFD, later: collides, kept
    ("\uff43\uff41\uff52\uff4f\uff4c@example.com", "carol@example.com"),  # full-width: rewritten
    ("caro\u217c@example.com", "caro\u217c@example.com"),  # roman-numeral l, later: kept
    ("ada@b\u00fccher.example", "ada@xn--bcher-kva.example"),  # IDNA: rewritten
    ("bob@example.com", "bob@example.com"),  # ASCII: untouched
    ("\u0430da@example.com", "\u0430da@example.com"),  # mixed script: no canonical form, kept
    ("dan@example.com.", "dan@example.com"),  # the root's trailing dot: rewritten
]


async def test_migration_canonicalizes_legacy_emails_and_keeps_both_of_a_collision(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    clock = FrozenClock(_T0 + timedelta(days=30))
    ids = [uuid.uuid4() for _ in LEGACY_ROWS]
    async with pool_on(dsn, db_statement_timeout="30s") as pool:
        await apply_migrations(
            pool, [m for m in bundled_migrations() if m.version < _CANONICAL_EMAILS]
        )
        for n, (user_id, (legacy, _)) in enumerate(zip(ids, LEGACY_ROWS, strict=True)):
            await pool.execute(
                "INSERT INTO users (id, email, password_hash, created_at, updated_at)"
                " VALUES ($1, $2, 'legacy-hash', $3, $3)",
                user_id,
                legacy,
                _T0 + timedelta(hours=n),
            )

        await migrate_database(pool, clock)

        emails = {
            row["id"]: row["email"] for row in await pool.fetch("SELECT id, email FROM users")
        }
        events = await pool.fetch("SELECT event, user_id, detail FROM audit_events ORDER BY id")
        held = {
            row["user_id"]: row["email"]
            for row in await pool.fetch("SELECT user_id, email FROM user_emails")
        }

    assert emails == {user_id: after for user_id, (_, after) in zip(ids, LEGACY_ROWS, strict=True)}
    # Login looks accounts up in user_emails (migration 0026): each holds its email there.
    assert held == emails
    assert [(row["event"], row["user_id"]) for row in events] == [
        ("email_canonical_collision", ids[1]),
        ("email_canonical_collision", ids[3]),
        ("email_not_canonical", ids[6]),
    ]
    assert [row["detail"].get("canonical_owner") for row in events] == [
        str(ids[0]),
        str(ids[2]),
        None,
    ]


async def test_migration_rewrite_runs_once(new_database: NewDatabase) -> None:
    dsn = await new_database()
    clock = FrozenClock(_T0)
    async with pool_on(dsn, db_statement_timeout="30s") as pool:
        await apply_migrations(
            pool, [m for m in bundled_migrations() if m.version < _CANONICAL_EMAILS]
        )
        await pool.execute(
            "INSERT INTO users (id, email, password_hash, created_at, updated_at)"
            " VALUES ($1, 'jose\u0301@example.com', 'legacy-hash', $2, $2)",
            uuid.uuid4(),
            _T0,
        )
        await migrate_database(pool, clock)

        await migrate_database(pool, clock)

        queued = await pool.fetchval("SELECT count(*) FROM email_canonicalization_queue")
        email = await pool.fetchval("SELECT email FROM users")

    assert (queued, email) == (0, "jos\u00e9@example.com")
