"""The expiry sweeper against real rows: sessions and tokens made through the RPCs."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import grpc
import pytest

from authsvc.app import AuthServer, build_sweeper
from authsvc.config import Config
from authsvc.core.clock import Clock, FrozenClock
from authsvc.core.models import SweepCounts
from authsvc.domain.refresh_tokens import hash_refresh_token
from authsvc.domain.throttle import IN_FLIGHT_EXPIRY
from authsvc.store.pool import Pool
from authsvc.store.sweep import SWEEP_LOCK_KEY, SWEPT, PgSweepStore
from authsvc.sweeper import Sweeper
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch, Launched
from tests.helpers import (
    Registered,
    Stub,
    bearer,
    login,
    refresh,
    refresh_failure,
    register,
    validate,
)
from tests.processes import eventually

pytestmark = pytest.mark.asyncio


@pytest.fixture
def launch(launch: Launch) -> Launch:
    """Servers that reveal accounts: Register signs in by itself, so no Login leaves
    throttle rows behind for the sweeps these tests count exactly. They do not sweep by
    themselves: a pass of their own could hold the sweep lock when a test runs one, or
    delete what the test's pass is to count."""

    async def revealing(
        *,
        server_pool: Pool | None = None,
        server_clock: Clock | None = None,
        runs_sweeper: bool = False,
        **overrides: str,
    ) -> Launched:
        return await launch(
            server_pool=server_pool,
            server_clock=server_clock,
            runs_sweeper=runs_sweeper,
            **{"registration_reveals_accounts": "true", **overrides},
        )

    return revealing


# Past a 1h idle timeout and the default 10 s refresh grace, when expired tokens go.
PAST_IDLE_AND_GRACE = timedelta(hours=1, seconds=11)


async def _session_ids(pool: Pool) -> set[str]:
    return {str(row["id"]) for row in await pool.fetch("SELECT id FROM sessions")}


async def _unended_ids(pool: Pool) -> set[str]:
    """Sessions not marked ended (live, or expired and not yet marked)."""
    rows = await pool.fetch("SELECT id FROM sessions WHERE revoked_at IS NULL")
    return {str(row["id"]) for row in rows}


async def _endings(pool: Pool) -> dict[str, tuple[datetime | None, str | None, str | None]]:
    """Each session's (revoked_at, end_reason, ended_by_kind)."""
    rows = await pool.fetch("SELECT id, revoked_at, end_reason, ended_by_kind FROM sessions")
    return {
        str(row["id"]): (row["revoked_at"], row["end_reason"], row["ended_by_kind"]) for row in rows
    }


async def _one_revoked_one_live(
    launch: Launch,
) -> tuple[AuthServer, Registered, Registered]:
    """A server keeping ended sessions for 1h, with one session logged out now and one live."""
    launched = await launch(ended_session_retention="1h")
    revoked = await register(launched.stub, email="revoked@example.com")
    live = await register(launched.stub, email="live@example.com")
    await launched.stub.Logout(pb.LogoutRequest(), metadata=bearer(revoked.access_token))
    return launched.server, revoked, live


def _sweeper(
    server: AuthServer,
    pool: Pool,
    clock: FrozenClock,
    *,
    batch_size: int,
    sleep: Callable[[float], Awaitable[None]],
) -> Sweeper:
    """The server's sweeper settings, with this batch size and sleep."""
    config = server.config
    return Sweeper(
        PgSweepStore(pool),
        clock,
        interval=config.sweep_interval,
        batch_size=batch_size,
        batch_pause=config.sweep_batch_pause,
        ended_session_retention=config.ended_session_retention,
        audit_retention=config.audit_retention,
        login_failure_window=config.login_failure_window,
        known_address_retention=config.known_address_retention,
        refresh_grace=config.refresh_grace_period,
        revocation_retention=config.effective_revocation_retention,
        webhook_delivery_retention=config.webhook_delivery_retention,
        sleep=sleep,
    )


def swept(**counts: int) -> dict[str, int]:
    """A sweep's counts: these, and zero of every other kind."""
    return {kind.name: 0 for kind in SWEPT} | counts


# Register's throttle buckets (all addresses, this address), swept once their hour passes.
SIGN_UP_BUCKETS = 2


async def _run_once_while_another_replica_holds_the_lock(
    server: AuthServer, pool: Pool
) -> SweepCounts | None:
    async with pool.acquire() as other_replica:
        await other_replica.execute("SELECT pg_advisory_lock($1)", SWEEP_LOCK_KEY)
        try:
            return await server.sweeper.run_once()
        finally:
            await other_replica.execute("SELECT pg_advisory_unlock($1)", SWEEP_LOCK_KEY)


async def test_sweep_marks_sessions_past_idle_or_absolute_deadline_ended_and_keeps_live_ones(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(session_idle_timeout="1h", session_lifetime="2h")
    started = clock.now()
    stub = launched.stub
    # Never refreshed: idle deadline at t0+1h.
    idle = await register(stub, email="idle@example.com")
    # Refreshed every 50 minutes: idle deadline capped by the lifetime at t0+2h.
    capped = await register(stub, email="capped@example.com")
    token = capped.refresh_token
    for _ in range(2):
        clock.advance(timedelta(minutes=50))
        token = (await refresh(stub, token)).refresh_token
    recent = await login(stub, email="idle@example.com")  # t0+100m, live until t0+160m
    clock.advance(timedelta(minutes=21))  # t0+121m
    newest = await register(stub, email="newest@example.com")  # live until t0+181m
    assert await _session_ids(pool) == {
        idle.session_id,
        capped.session_id,
        recent.session_id,
        newest.session_id,
    }

    counts = await launched.server.sweeper.run_once()

    # capped's two rotated tokens: each expired with the idle deadline it was issued
    # with; each session's current token stays with it. (And the login's throttle
    # buckets whose window has passed: the account from this address, the account, the
    # address.)
    assert counts == swept(expired_sessions=2, refresh_tokens=2, login_failures=3)
    assert await _endings(pool) == {
        idle.session_id: (started + timedelta(hours=1), "idle_timeout", "system"),
        capped.session_id: (started + timedelta(hours=2), "absolute_timeout", "system"),
        recent.session_id: (None, None, None),
        newest.session_id: (None, None, None),
    }
    token_owners = [
        str(row["session_id"]) for row in await pool.fetch("SELECT session_id FROM refresh_tokens")
    ]
    assert sorted(token_owners) == sorted(
        [idle.session_id, capped.session_id, recent.session_id, newest.session_id]
    )


_SESSION = """
INSERT INTO sessions (
    id, user_id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name, revoked_at, revoke_reason)
VALUES ($1, $2, $3, $3, $4, $4, false, '', '', 'other', '', '', '', $5, $6)
"""
# A token and a lineage step carry their session's user (migration 0025).
_TOKEN = """
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
SELECT $1, $2, $3, $4, $5, user_id FROM sessions WHERE id = $2
"""
_ROTATED_TOKEN = """
INSERT INTO refresh_tokens
    (id, session_id, token_hash, created_at, expires_at, rotated_at, user_id)
SELECT $1, $2, $3, $4, $5, $4, user_id FROM sessions WHERE id = $2
"""


async def _one_due_row_of_each_kind(pool: Pool, config: Config, now: datetime) -> None:
    """A row just past its cutoff for each kind the store sweeps (by its count's name)."""
    second = timedelta(seconds=1)
    user_id, live, revoked, expired = (uuid.uuid4() for _ in range(4))
    revoked_at = now - config.ended_session_retention - second
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)"
            " VALUES ($1, 'swept@example.com', '', 'unused', $2, $2)",
            user_id,
            now - timedelta(days=400),
        )
        await conn.execute(_SESSION, live, user_id, now, now + timedelta(hours=1), None, None)
        await conn.execute(  # expired_sessions: idle-expired, marked ended
            _SESSION, expired, user_id, now - timedelta(hours=2), now - second, None, None
        )
        await conn.execute(  # revoked_sessions, with its one token (revoked_session_tokens)
            _SESSION, revoked, user_id, revoked_at, now + timedelta(hours=1), revoked_at, "logout"
        )
        await conn.execute(
            _TOKEN, uuid.uuid4(), revoked, b"r", revoked_at, now + timedelta(hours=1)
        )
        await conn.execute(  # ended_session_lineage: a step of the revoked session
            "INSERT INTO refresh_lineage (session_id, presented_token_id, successor_token_id,"
            " presented_at, ip_address, user_agent, outcome, within_grace, user_id)"
            " SELECT $1, $2, $3, $4, '', '', 'rotated', false, user_id"
            " FROM sessions WHERE id = $1",
            revoked,
            uuid.uuid4(),
            uuid.uuid4(),
            revoked_at,
        )
        await conn.execute(  # refresh_tokens: a live session's rotated token past expiry and grace
            _ROTATED_TOKEN,
            uuid.uuid4(),
            live,
            b"t",
            now - timedelta(hours=1),
            now - config.refresh_grace_period - second,
        )
        await conn.execute(  # audit_events
            "INSERT INTO audit_events (occurred_at, event, detail) VALUES ($1, 'old', '{}')",
            now - config.audit_retention - second,
        )
        await conn.execute(  # login_failures: a counter whose window has passed
            "INSERT INTO login_failures (bucket, failures, window_started_at, window_length)"
            " VALUES ('ip:192.0.2.1', 1, $1, $2)",
            now - config.login_failure_window - second,
            config.login_failure_window,
        )
        await conn.execute(  # known_addresses
            "INSERT INTO login_known_addresses (pair_bucket, last_success_at)"
            " VALUES ('pair:1', $1)",
            now - config.known_address_retention - second,
        )
        await conn.execute(  # revocations: a log entry past its retention
            "INSERT INTO revocation_log (id, session_id, user_id, reason, revoked_at)"
            " VALUES (nextval('revocation_log_id_seq'), $1, $2, 'user_logout', $3)",
            revoked,
            user_id,
            now - config.effective_revocation_retention - second,
        )
        await conn.execute(  # password_reset_tokens: one past its expiry
            "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at)"
            " VALUES ('\\x01', $1, $2, $3)",
            user_id,
            now - timedelta(hours=2),
            now - second,
        )
        await conn.execute(  # pending_logins: a second step never taken
            "INSERT INTO pending_logins (user_id, token_hash, id, created_at, expires_at,"
            " password_digest, enrolment_required, remember_me, device_name, ip_address,"
            " user_agent) VALUES ($1, '\\x01', $2, $3, $4, '\\x02', false, false, '', '', '')",
            user_id,
            uuid.uuid4(),
            now - timedelta(minutes=10),
            now - second,
        )
        await conn.execute(  # factor_enrolments: a TOTP enrolment never confirmed
            "INSERT INTO user_factors (user_id, id, kind, created_at, enrolment_expires_at)"
            " VALUES ($1, $2, 'totp', $3, $4)",
            user_id,
            uuid.uuid4(),
            now - timedelta(minutes=10),
            now - second,
        )
        await conn.execute(  # webauthn_challenges: a ceremony never finished, expired
            "INSERT INTO webauthn_challenges (id, purpose, challenge_hash, created_at, expires_at)"
            " VALUES ($1, 'assertion', '\\x01', $2, $3)",
            uuid.uuid4(),
            now - timedelta(minutes=10),
            now - second,
        )
        await conn.execute(  # stale_login_attempts: its process died before it settled
            "INSERT INTO login_attempts_in_flight (attempt_id, bucket, admitted_at)"
            " VALUES ($1, 'ip:192.0.2.1', $2)",
            uuid.uuid4(),
            now - IN_FLIGHT_EXPIRY - second,
        )
        await conn.execute(  # webhook_deliveries: one delivered before the retention
            "INSERT INTO webhook_deliveries (id, endpoint, event_type, occurred_at, user_id,"
            " data, state, next_attempt_at, last_attempt_at)"
            " VALUES ($1, 'http://127.0.0.1/', 'session.created', $2, $3, '{}', 'delivered',"
            " $2, $2)",
            uuid.uuid4(),
            now - config.webhook_delivery_retention - second,
            user_id,
        )


async def test_sweep_deletes_and_counts_one_due_row_of_every_kind_it_declares(
    config: Config, clock: FrozenClock, pool: Pool
) -> None:
    # A kind added to the store's SWEPT without a row above fails here (count 0).
    await _one_due_row_of_each_kind(pool, config, clock.now())

    counts = await build_sweeper(config, pool, clock).run_once()

    assert counts == {kind.name: 1 for kind in SWEPT}


async def test_sweep_keeps_revoked_session_within_retention(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    server, revoked, live = await _one_revoked_one_live(launch)
    clock.advance(timedelta(minutes=59))

    counts = await server.sweeper.run_once()

    assert counts == swept()
    assert await _session_ids(pool) == {revoked.session_id, live.session_id}


async def test_sweep_deletes_revoked_session_after_retention(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    server, revoked, live = await _one_revoked_one_live(launch)
    clock.advance(timedelta(minutes=61))

    counts = await server.sweeper.run_once()

    # The log's entry goes too: its retention (1h by default) has passed as well.
    assert counts == swept(
        revoked_sessions=1,
        revoked_session_tokens=1,
        login_failures=SIGN_UP_BUCKETS,
        revocations=1,
    )
    assert await _session_ids(pool) == {live.session_id}
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE session_id = $1::uuid", revoked.session_id
        )
        == 0
    )


async def test_sweep_keeps_revoked_session_for_retention_even_past_its_idle_deadline(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    # Revoked rows are kept for audit (RevokeSession, REFRESH_TOKEN_REUSED) for the
    # retention period, whatever the session's own deadlines were.
    launched = await launch(session_idle_timeout="1h", ended_session_retention="1d")
    revoked = await register(launched.stub)
    await launched.stub.Logout(pb.LogoutRequest(), metadata=bearer(revoked.access_token))
    clock.advance(timedelta(hours=2))

    await launched.server.sweeper.run_once()

    row = await pool.fetchrow(
        "SELECT revoked_at, revoke_reason FROM sessions WHERE id = $1::uuid", revoked.session_id
    )
    assert row is not None, "revoked session deleted before its retention passed"
    assert row["revoke_reason"] == "logout"


async def _rotate_twice_then_pass_the_first_expiry(
    stub: Stub, clock: FrozenClock
) -> tuple[str, str, str, str]:
    """With a 1h idle timeout: (session_id, first, second, third refresh token) at t0+70m.

    first expired at t0+60m (rotated), second expires at t0+90m (rotated),
    third expires at t0+110m (live).
    """
    registered = await register(stub)
    first = registered.refresh_token
    clock.advance(timedelta(minutes=30))
    second = (await refresh(stub, first)).refresh_token
    clock.advance(timedelta(minutes=20))
    third = (await refresh(stub, second)).refresh_token
    clock.advance(timedelta(minutes=20))
    return registered.session_id, first, second, third


async def test_sweep_deletes_rotated_tokens_of_a_live_session_once_they_expire(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(session_idle_timeout="1h")
    session_id, _, second, third = await _rotate_twice_then_pass_the_first_expiry(
        launched.stub, clock
    )

    counts = await launched.server.sweeper.run_once()

    assert counts == swept(refresh_tokens=1, login_failures=SIGN_UP_BUCKETS)
    assert await _session_ids(pool) == {session_id}
    kept = {
        bytes(row["token_hash"])
        for row in await pool.fetch("SELECT token_hash FROM refresh_tokens")
    }
    # The unexpired rotated token stays, so its replay is still recognised as reuse.
    assert kept == {hash_refresh_token(t) for t in (second, third)}


async def test_replay_of_an_unexpired_rotated_token_after_a_sweep_is_still_reuse(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(session_idle_timeout="1h")
    _, _, second, third = await _rotate_twice_then_pass_the_first_expiry(launched.stub, clock)
    await launched.server.sweeper.run_once()

    failure = await refresh_failure(launched.stub, second)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    assert await refresh_failure(launched.stub, third) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_REVOKED",
    )


async def test_replay_of_a_swept_rotated_token_is_invalid_and_leaves_the_session_alive(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(session_idle_timeout="1h")
    session_id, first, _, third = await _rotate_twice_then_pass_the_first_expiry(
        launched.stub, clock
    )
    await launched.server.sweeper.run_once()

    failure = await refresh_failure(launched.stub, first)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
    assert (await refresh(launched.stub, third)).session_id == session_id


async def test_live_refresh_token_still_refreshes_after_sweep(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(session_idle_timeout="1h")
    session_id, _, _, third = await _rotate_twice_then_pass_the_first_expiry(launched.stub, clock)
    await launched.server.sweeper.run_once()

    refreshed = await refresh(launched.stub, third)

    assert refreshed.session_id == session_id
    assert refreshed.refresh_token
    assert refreshed.refresh_token != third


async def test_sweep_marks_more_expired_sessions_than_one_batch_in_one_pass(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(sweep_batch_size="10", session_idle_timeout="1h")
    await register(launched.stub)
    await asyncio.gather(*(login(launched.stub) for _ in range(34)))
    assert len(await _session_ids(pool)) == 35
    clock.advance(PAST_IDLE_AND_GRACE)

    counts = await launched.server.sweeper.run_once()

    assert counts is not None
    assert (counts["expired_sessions"], counts["revoked_sessions"]) == (35, 0)
    assert len(await _session_ids(pool)) == 35
    assert await _unended_ids(pool) == set()


async def test_sweep_pauses_between_batches_and_not_after_the_last(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(session_idle_timeout="1h")
    await register(launched.stub)
    await asyncio.gather(*(login(launched.stub) for _ in range(24)))
    clock.advance(PAST_IDLE_AND_GRACE)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    sweeper = _sweeper(launched.server, pool, clock, batch_size=10, sleep=sleep)

    counts = await sweeper.run_once()

    # 25 sessions in batches of 10: 10, 10, then 5, which ends the pass.
    assert counts is not None
    assert counts["expired_sessions"] == 25
    assert pauses == [launched.server.config.sweep_batch_pause.total_seconds()] * 2


async def test_sweep_is_skipped_while_another_replica_holds_the_lock(
    server: AuthServer, stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    registered = await register(stub)
    clock.advance(timedelta(days=8))

    counts = await _run_once_while_another_replica_holds_the_lock(server, pool)

    assert counts is None
    assert await _session_ids(pool) == {registered.session_id}


async def test_sweep_runs_once_the_other_replica_releases_the_lock(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    server = (launched := await launch()).server
    await register(launched.stub)
    clock.advance(timedelta(days=8))
    skipped = await _run_once_while_another_replica_holds_the_lock(server, pool)

    counts = await server.sweeper.run_once()

    assert skipped is None
    assert counts == swept(expired_sessions=1, login_failures=SIGN_UP_BUCKETS)
    assert await _unended_ids(pool) == set()


async def test_swept_session_access_token_validates_inactive_as_session_expired(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    # The access token outlives the session, so only the session decides.
    launched = await launch(
        session_idle_timeout="10m", access_token_ttl="1h", ended_session_retention="1m"
    )
    registered = await register(launched.stub)
    clock.advance(timedelta(minutes=11))
    assert await launched.server.sweeper.run_once() == swept(
        expired_sessions=1, revoked_session_tokens=1, revoked_sessions=1
    )
    assert await _session_ids(pool) == set()

    response = await validate(launched.stub, registered.access_token)

    assert (response.active, response.inactive_reason) == (False, "SESSION_EXPIRED")
    assert response.session_id == registered.session_id


async def test_sweep_leaves_a_session_locked_by_a_request_for_the_next_pass(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(session_idle_timeout="1h")
    busy = await register(launched.stub, email="busy@example.com")
    idle = await register(launched.stub, email="idle@example.com")
    clock.advance(timedelta(hours=2))
    async with pool.acquire() as request, request.transaction():
        # By its user too: on Citus a row lock must name the row's shard.
        user_id = await request.fetchval(
            "SELECT user_id FROM sessions WHERE id = $1::uuid", busy.session_id
        )
        await request.execute(
            "SELECT id FROM sessions WHERE user_id = $1 AND id = $2::uuid FOR UPDATE",
            user_id,
            busy.session_id,
        )

        counts = await launched.server.sweeper.run_once()

        remaining = await _unended_ids(pool)

    assert counts == swept(expired_sessions=1, login_failures=SIGN_UP_BUCKETS)
    assert remaining == {busy.session_id}
    assert idle.session_id not in remaining


async def test_sweep_deletes_a_long_lived_sessions_rotated_tokens_in_batches(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    # A session refreshed often piles up rotated tokens; a cascade from the session row
    # would delete them all in one statement.
    launched = await launch(session_idle_timeout="1h")
    registered = await register(launched.stub)
    token = registered.refresh_token
    for _ in range(24):
        clock.advance(timedelta(minutes=1))
        token = (await refresh(launched.stub, token)).refresh_token
    clock.advance(timedelta(hours=2))
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    sweeper = _sweeper(launched.server, pool, clock, batch_size=10, sleep=sleep)

    counts = await sweeper.run_once()

    # 24 rotated tokens in batches of 10: 10, 10, then 4; the current one stays with the
    # session's tombstone.
    assert counts == swept(expired_sessions=1, refresh_tokens=24, login_failures=SIGN_UP_BUCKETS)
    assert len(pauses) == 2
    assert await _session_ids(pool) == {registered.session_id}
    assert await pool.fetchval("SELECT count(*) FROM refresh_tokens") == 1


async def test_sweep_logs_what_it_removed(
    launch: Launch, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    launched = await launch(session_idle_timeout="1h")
    await register(launched.stub)
    clock.advance(timedelta(hours=2))
    caplog.set_level(logging.INFO, logger="authsvc.sweeper")

    await launched.server.sweeper.run_once()

    [record] = [r for r in caplog.records if getattr(r, "event", None) == "sweep"]
    removed = {
        key: getattr(record, key)
        for key in ("expired_sessions", "revoked_sessions", "refresh_tokens")
    }
    assert removed == {"expired_sessions": 1, "revoked_sessions": 0, "refresh_tokens": 0}


async def test_sweep_that_found_nothing_logs_at_debug_only(
    config: Config, pool: Pool, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    # No server: its own first pass would hold the sweep lock.
    sweeper = build_sweeper(config, pool, clock)
    caplog.set_level(logging.DEBUG, logger="authsvc.sweeper")

    counts = await sweeper.run_once()

    assert counts is not None
    assert not any(counts.values())

    [record] = [r for r in caplog.records if getattr(r, "event", None) == "sweep"]
    assert record.levelno == logging.DEBUG


class _StopSweeping(Exception):
    pass


async def test_periodic_sweeping_goes_on_after_a_pass_fails(
    launch: Launch, clock: FrozenClock, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    # A pass failing for any reason (here a table a botched manual change renamed) is
    # logged, and the next pass runs at the next interval.
    launched = await launch(session_idle_timeout="1h")
    registered = await register(launched.stub)
    clock.advance(timedelta(hours=2))
    intervals: list[float] = []

    async def sleep(seconds: float) -> None:
        intervals.append(seconds)
        if len(intervals) == 1:
            await pool.execute("ALTER TABLE audit_events_away RENAME TO audit_events")
        else:
            raise _StopSweeping

    sweeper = _sweeper(launched.server, pool, clock, batch_size=1000, sleep=sleep)
    await pool.execute("ALTER TABLE audit_events RENAME TO audit_events_away")
    try:
        with pytest.raises(_StopSweeping):
            await sweeper.run()
    finally:
        await pool.execute("ALTER TABLE IF EXISTS audit_events_away RENAME TO audit_events")

    assert [getattr(r, "event", None) for r in caplog.records].count("sweep_failed") == 1
    assert registered.session_id not in await _unended_ids(pool)
    assert intervals == [launched.server.config.sweep_interval.total_seconds()] * 2


async def test_stopping_the_server_mid_sweep_ends_the_pass_and_frees_the_sweep_lock(
    launch: Launch, clock: FrozenClock, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    first = await launch(session_idle_timeout="1h")
    for number in range(3):
        await register(first.stub, email=f"user{number}@example.com")
    clock.advance(timedelta(hours=2))
    # Its periodic sweeper starts at once and, one row per batch, pauses while holding the lock.
    sweeping = await launch(
        runs_sweeper=True, session_idle_timeout="1h", sweep_batch_size="1", sweep_batch_pause="1h"
    )

    async def sweep_lock_held() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                SWEEP_LOCK_KEY & 0xFFFFFFFF,
            )
        )

    async def first_batch_done_and_pausing() -> bool:
        # The lock alone is taken before the first batch runs; wait for the pause after it.
        return await sweep_lock_held() and len(await _unended_ids(pool)) == 2

    await eventually(first_batch_done_and_pausing)
    caplog.set_level(logging.WARNING, logger="authsvc")

    await sweeping.server.stop(timedelta(seconds=1))

    assert not await sweep_lock_held()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(await _unended_ids(pool)) == 2  # one batch marked before the stop
