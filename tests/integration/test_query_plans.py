"""Every hot statement finds its rows through an index, never a sequential scan
of sessions or refresh_tokens, on a store loaded and analysed like production
(issue 6: cost flat in data size). Plans only; nothing is timed."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from authsvc.store import lineage as lineage_sql
from authsvc.store import revocations as revocation_sql
from authsvc.store import session_limits as session_limit_sql
from authsvc.store import sessions as session_sql
from authsvc.store import sweep as sweep_sql
from authsvc.store import throttle as throttle_sql
from authsvc.store.pool import Pool

pytestmark = pytest.mark.asyncio

USERS = 1000
SESSIONS_PER_USER = 20  # 20,000 sessions
TOKENS_PER_SESSION = 2  # 40,000 refresh tokens
NOW = datetime(2030, 1, 1, tzinfo=UTC)
WATCHED = {
    "sessions",
    "refresh_tokens",
    "login_failures",
    "login_attempts_in_flight",
    "login_known_addresses",
    "revocation_log",
    "refresh_lineage",
}
SWEEP_BATCH = 1000  # the default AUTHSVC_SWEEP_BATCH_SIZE


async def load_store(pool: Pool) -> None:
    """Users with sessions (1 in 20 expired, 1 in 20 revoked) and tokens; then ANALYZE."""
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
            INSERT INTO sessions (
                id, user_id, created_at, last_active_at, idle_expires_at, expires_at,
                remember_me, user_agent, ip_address, device_type, browser, os, device_name,
                revoked_at, revoke_reason)
            SELECT gen_random_uuid(), u.id, n.now - make_interval(secs => s),
                   n.now - make_interval(secs => s),
                   CASE WHEN s % 20 = 0 THEN n.now - interval '1 day'
                        ELSE n.now + interval '7 days' END,
                   n.now + interval '7 days', false, 'bench/1.0', '127.0.0.1', 'other', 'Other',
                   'Other', 'device',
                   CASE WHEN s % 20 = 1 THEN n.now - interval '1 hour' END,
                   CASE WHEN s % 20 = 1 THEN 'user' END
            FROM users u CROSS JOIN generate_series(1, $2) s
                CROSS JOIN (SELECT $1::timestamptz AS now) n
            """,
            NOW,
            SESSIONS_PER_USER,
        )
        await conn.execute(
            """
            INSERT INTO refresh_tokens
                (id, session_id, token_hash, created_at, expires_at, user_id)
            SELECT gen_random_uuid(), s.id, sha256(convert_to(s.id::text || t::text, 'UTF8')),
                   s.created_at, s.idle_expires_at, s.user_id
            FROM sessions s CROSS JOIN generate_series(1, $1) t
            """,
            TOKENS_PER_SESSION,
        )
        # Refresh lineage: a step for each token.
        await conn.execute(
            """
            INSERT INTO refresh_lineage (session_id, presented_token_id, successor_token_id,
                presented_at, ip_address, user_agent, outcome, within_grace, user_id)
            SELECT session_id, id, gen_random_uuid(), created_at, '127.0.0.1', 'bench/1.0',
                   'rotated', false, user_id
            FROM refresh_tokens
            """
        )
        # Login throttle buckets (1 in 20 past its window) and attempts in flight.
        await conn.execute(
            """
            INSERT INTO login_failures (bucket, failures, window_started_at)
            SELECT 'account:' || n, n % 6,
                   CASE WHEN n % 20 = 0 THEN $1::timestamptz - interval '1 hour' ELSE $1 END
            FROM generate_series(1, $2) n
            """,
            NOW,
            USERS * SESSIONS_PER_USER,
        )
        await conn.execute(
            """
            INSERT INTO login_attempts_in_flight (attempt_id, bucket, admitted_at)
            SELECT gen_random_uuid(), 'account:' || n,
                   CASE WHEN n % 20 = 0 THEN $1::timestamptz - interval '1 hour' ELSE $1 END
            FROM generate_series(1, $2) n
            """,
            NOW,
            USERS * SESSIONS_PER_USER,
        )
        # Addresses accounts signed in from (1 in 20 past the retention).
        await conn.execute(
            """
            INSERT INTO login_known_addresses (pair_bucket, last_success_at)
            SELECT 'pair:' || n,
                   CASE WHEN n % 20 = 0 THEN $1::timestamptz - interval '100 days' ELSE $1 END
            FROM generate_series(1, $2) n
            """,
            NOW,
            USERS * SESSIONS_PER_USER,
        )
        # The revocation log over its 1h retention and the minute since the last sweep.
        await conn.execute(
            """
            INSERT INTO revocation_log (id, session_id, user_id, reason, revoked_at)
            SELECT nextval('revocation_log_id_seq'), gen_random_uuid(), gen_random_uuid(),
                   'user_logout', $1::timestamptz - make_interval(secs => n * 3660.0 / $2)
            FROM generate_series($2, 1, -1) n
            """,
            NOW,
            USERS * SESSIONS_PER_USER,
        )
    await pool.execute(
        "ANALYZE users, sessions, refresh_tokens, login_failures, login_attempts_in_flight,"
        " login_known_addresses, revocation_log, refresh_lineage"
    )


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def sequential_scans(pool: Pool, statement: str, *args: object) -> list[str]:
    """The watched tables this statement's plan reads with a Seq Scan."""
    explained = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
    return [
        node["Relation Name"]
        for node in plan_nodes(json.loads(explained)[0]["Plan"])
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in WATCHED
    ]


async def a_live_session(pool: Pool) -> tuple[uuid.UUID, uuid.UUID, datetime, bytes]:
    """(session id, user id, last_active_at, one of its token hashes)."""
    row = await pool.fetchrow(
        """
        SELECT s.id, s.user_id, s.last_active_at, t.token_hash
        FROM sessions s JOIN refresh_tokens t ON t.session_id = s.id
        WHERE s.revoked_at IS NULL AND s.idle_expires_at > $1
        LIMIT 1
        """,
        NOW,
    )
    assert row is not None
    return row["id"], row["user_id"], row["last_active_at"], bytes(row["token_hash"])


def statements(
    session_id: uuid.UUID, user_id: uuid.UUID, last_active_at: datetime, token_hash: bytes
) -> dict[str, tuple[str, tuple[object, ...]]]:
    audit = ("session_revoked", "127.0.0.1", "bench/1.0", None)
    never_issued = hashlib.sha256(b"never issued").digest()
    rotation = (
        NOW,
        NOW + timedelta(days=7),  # the idle deadline a rotation slides to
        b"box",
        uuid.uuid4(),
        hashlib.sha256(b"next").digest(),
        "kid",
        *("127.0.0.1", "bench/1.0", True),
        hashlib.sha256(b"idempotency key").digest(),
        user_id,
    )
    return {
        "refresh in one statement": (
            session_sql._ROTATE_IF_CURRENT,
            (token_hash, *rotation),
        ),
        "refresh in one statement, unknown token": (
            session_sql._ROTATE_IF_CURRENT,
            (never_issued, *rotation),
        ),
        "session by token (refresh lock)": (
            session_sql._LOCK_SESSION_BY_TOKEN,
            (token_hash, user_id),
        ),
        "token by hash": (session_sql._SELECT_TOKEN, (token_hash, session_id, user_id)),
        "unknown token": (session_sql._LOCK_SESSION_BY_TOKEN, (never_issued, user_id)),
        "legacy token's user": (session_sql._TOKEN_OWNER, (token_hash,)),
        "session by id": (session_sql._SELECT_SESSION, (session_id,)),
        "own session by id": (session_sql._SELECT_OWN_SESSION, (session_id, user_id)),
        "lineage: first token": (lineage_sql._HEAD, (session_id, user_id)),
        "lineage: newest steps": (lineage_sql._NEWEST_STEPS, (session_id, 1001, user_id)),
        "lineage: reuse pair": (lineage_sql._REUSE_PAIR, (session_id, user_id)),
        "live sessions, first page": (session_sql._LIST_LIVE_FIRST_PAGE, (user_id, NOW, 21)),
        "live sessions, keyset page": (
            session_sql._LIST_LIVE_AFTER,
            (user_id, NOW, 21, last_active_at, session_id),
        ),
        "revoke own session": (
            session_sql._REVOKE_OWN,
            (session_id, user_id, NOW, "user", *audit, "user_revoked", "user", session_id, None),
        ),
        # One bucket each (on Citus, a router query on the bucket's shard).
        "throttle: lock a bucket": (
            throttle_sql._LOCK_BUCKET,
            ("account:7", NOW, timedelta(minutes=15)),
        ),
        "throttle: read a bucket and its attempts in flight": (
            throttle_sql._READ_BUCKET,
            ("account:7", NOW, timedelta(minutes=15), NOW - timedelta(minutes=2)),
        ),
        "throttle: admit, counting the attempts in flight": (
            throttle_sql._ADMIT_COUNTING_OTHERS,
            ("account:7", uuid.uuid4(), NOW, NOW - timedelta(minutes=2)),
        ),
        "throttle: count a failure": (
            throttle_sql._COUNT_FAILURE,
            ("account:7", NOW, timedelta(minutes=15), uuid.uuid4()),
        ),
        "throttle: clear failures": (throttle_sql._CLEAR_FAILURES, ("account:7",)),
        "throttle: forgive, settling the attempt": (
            throttle_sql._FORGIVE_SETTLING,
            ("account:7", uuid.uuid4()),
        ),
        "throttle: forgive the pair and remember it": (
            throttle_sql._FORGIVE_PAIR_SETTLING,
            ("pair:7", uuid.uuid4(), NOW),
        ),
        "throttle: known address": (
            throttle_sql._IS_KNOWN_ADDRESS,
            ("pair:7", NOW - timedelta(days=90)),
        ),
        "throttle: forget an attempt": (throttle_sql._FORGET_ATTEMPT, ("account:7", uuid.uuid4())),
        "revoke all of a user's sessions": (
            session_sql._REVOKE_ALL_OF_USER,
            (user_id, NOW, "user", session_id, *audit, "user_logout", "user", session_id, None),
        ),
        # A login under a session limit (AUTHSVC_SESSION_LIMIT, here 2).
        "session limit: lock the user": (session_limit_sql._LOCK_USER, (user_id, "unused")),
        "session limit: count live": (session_limit_sql._COUNT_LIVE, (user_id, NOW, 2)),
        "session limit: evict the least recently active": (
            session_limit_sql._EVICT_LEAST_RECENT,
            (user_id, NOW, 1, "limit", "session_limit_evicted", *audit),
        ),
        # The revocation feed: each process's poll, catch-up, and a subscriber's snapshot.
        "revocation log bounds": (revocation_sql._BOUNDS, ()),
        "revocations after a cursor": (revocation_sql._READ_AFTER, (19_000, 1000)),
        "revocations since an instant": (
            revocation_sql._READ_ENDED_SINCE,
            (NOW - timedelta(minutes=16), 0, 1000),
        ),
    }


def sweep_statements() -> dict[str, tuple[str, tuple[object, ...]]]:
    return {
        "sweep expired tokens": (sweep_sql._DELETE_EXPIRED_TOKENS, (NOW, SWEEP_BATCH)),
        "sweep past login failures": (
            sweep_sql._DELETE_PAST_LOGIN_FAILURES,
            (NOW - timedelta(minutes=15), SWEEP_BATCH, NOW),
        ),
        "sweep forgotten known addresses": (
            sweep_sql._DELETE_FORGOTTEN_ADDRESSES,
            (NOW - timedelta(days=90), SWEEP_BATCH),
        ),
        "sweep stale login attempts": (
            sweep_sql._DELETE_STALE_LOGIN_ATTEMPTS,
            (NOW - timedelta(minutes=2), SWEEP_BATCH),
        ),
        "sweep tokens of long-revoked sessions": (
            sweep_sql._DELETE_TOKENS_OF_REVOKED_SESSIONS,
            (NOW - timedelta(minutes=30), SWEEP_BATCH),
        ),
        "mark expired sessions ended": (sweep_sql._MARK_EXPIRED_SESSIONS, (NOW, SWEEP_BATCH)),
        "sweep lineage of ended sessions": (
            sweep_sql._DELETE_LINEAGE_OF_ENDED_SESSIONS,
            (NOW - timedelta(minutes=30), SWEEP_BATCH),
        ),
        "sweep long-revoked sessions": (
            sweep_sql._DELETE_REVOKED_SESSIONS,
            (NOW - timedelta(minutes=30), SWEEP_BATCH),
        ),
        "sweep old revocations": (
            sweep_sql._DELETE_OLD_REVOCATIONS,
            (NOW - timedelta(hours=1), SWEEP_BATCH),
        ),
    }


async def test_request_statements_never_scan_a_watched_table_sequentially(pool: Pool) -> None:
    await load_store(pool)
    hot = statements(*await a_live_session(pool))

    scans = {name: await sequential_scans(pool, sql, *args) for name, (sql, args) in hot.items()}

    assert {name: tables for name, tables in scans.items() if tables} == {}


# Found by this test: `DELETE ... WHERE id IN (SELECT ... LIMIT $2 ...)` was planned as
# a hash semi-join over a Seq Scan of all sessions, so every sweep batch read the table.
async def test_sweeper_statements_never_scan_a_watched_table_sequentially(pool: Pool) -> None:
    await load_store(pool)

    scans = {
        name: await sequential_scans(pool, sql, *args)
        for name, (sql, args) in sweep_statements().items()
    }

    assert {name: tables for name, tables in scans.items() if tables} == {}
