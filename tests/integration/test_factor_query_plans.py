"""The factor statements (store/factors.py) and the sweep of expired enrolments find their
rows through an index, never a sequential scan of user_factors or recovery_codes, on
tables loaded and analysed like production. Plans only; nothing is timed."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from authsvc.core.models import SweepCutoffs
from authsvc.store import factors as factor_sql
from authsvc.store import sweep as sweep_sql
from authsvc.store.pool import Pool
from tests.query_plans import plan_nodes, plans

pytestmark = pytest.mark.asyncio

USERS = 5000
NOW = datetime(2030, 1, 1, tzinfo=UTC)
WATCHED = {"user_factors", "recovery_codes"}


async def load_factors(pool: Pool) -> uuid.UUID:
    """Users each with a confirmed TOTP and ten recovery codes, 1 in 20 with an enrolment
    expired unconfirmed; then ANALYZE. Returns one user's id."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
            SELECT gen_random_uuid(), 'user' || u || '@example.com', '', 'unused', $1, $1
            FROM generate_series(1, $2) u
            """,
            NOW,
            USERS,
        )
        await conn.execute(
            """
            INSERT INTO user_factors (user_id, id, kind, created_at, confirmed_at,
                                      totp_last_step)
            SELECT id, gen_random_uuid(), 'totp', $1, $1, 1 FROM users
            """,
            NOW,
        )
        await conn.execute(
            """
            INSERT INTO user_factors (user_id, id, kind, created_at, enrolment_expires_at)
            SELECT id, gen_random_uuid(), 'totp', $1::timestamptz - interval '1 hour',
                   $1::timestamptz - interval '50 minutes'
            FROM users WHERE abs(hashtext(id::text)) % 20 = 0
            """,
            NOW,
        )
        await conn.execute(
            """
            INSERT INTO recovery_codes (user_id, code_hash, created_at)
            SELECT id, sha256(convert_to(id::text || n::text, 'UTF8')), $1
            FROM users CROSS JOIN generate_series(1, 10) n
            """,
            NOW,
        )
    await pool.execute("ANALYZE users, user_factors, recovery_codes")
    user_id = await pool.fetchval("SELECT id FROM users LIMIT 1")
    assert isinstance(user_id, uuid.UUID)
    return user_id


async def sequential_scans(pool: Pool, statement: str, *args: object) -> list[str]:
    return [
        node["Relation Name"]
        for top in await plans(pool, statement, *args)
        for node in plan_nodes(top)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in WATCHED
    ]


async def test_factor_statements_never_scan_a_factor_table_sequentially(pool: Pool) -> None:
    user_id = await load_factors(pool)
    factor_id = uuid.uuid4()
    code_hash = hashlib.sha256(b"a code").digest()
    statements: dict[str, tuple[str, tuple[object, ...]]] = {
        "confirmed TOTP": (factor_sql._CONFIRMED_TOTP, (user_id,)),
        "TOTP by id": (factor_sql._TOTP_BY_ID, (user_id, factor_id)),
        "accept a step": (factor_sql._ACCEPT_TOTP_STEP, (user_id, factor_id, 7, NOW)),
        "use a recovery code": (factor_sql._USE_RECOVERY_CODE, (user_id, code_hash, NOW)),
        "factor kinds": (factor_sql._FACTOR_KINDS, (user_id,)),
        "list factors": (factor_sql._LIST_FACTORS, (user_id,)),
        "unused codes": (factor_sql._UNUSED_CODES, (user_id,)),
        "remove a factor": (factor_sql._REMOVE_FACTOR, (user_id, factor_id)),
        "confirm": (factor_sql._CONFIRM_TOTP, (user_id, factor_id, NOW, 7)),
    }

    scans = {
        name: await sequential_scans(pool, sql, *args) for name, (sql, args) in statements.items()
    }

    assert {name: tables for name, tables in scans.items() if tables} == {}


async def test_the_enrolment_sweep_never_scans_user_factors_sequentially(pool: Pool) -> None:
    await load_factors(pool)
    [swept] = [kind for kind in sweep_sql.SWEPT if kind.name == "factor_enrolments"]
    cutoffs = SweepCutoffs(
        now=NOW,
        tokens_expired_before=NOW,
        ended_before=NOW,
        audit_before=NOW,
        failures_before=NOW,
        attempts_before=NOW,
        known_addresses_before=NOW,
        revocations_before=NOW,
        webhook_deliveries_before=NOW - timedelta(days=30),
    )
    assert swept.candidates is not None
    picked = await pool.fetch(swept.candidates, *swept.args(cutoffs), 1000)
    keys = ([row["user_id"] for row in picked], [row["id"] for row in picked])

    scans = [
        *await sequential_scans(pool, swept.candidates, *swept.args(cutoffs), 1000),
        *await sequential_scans(pool, swept.statement, *keys, *swept.args(cutoffs)),
    ]

    assert picked
    assert scans == []
