"""Per-user session limits (AUTHSVC_SESSION_LIMIT) on a real server and database: a login
past the limit evicts the least recently active session (through the feed, counted,
audited) or is refused after its password, and logins of one user serialise on the
user's row only when a limit is set."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.core.models import SessionEndReason
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import (
    PASSWORD,
    Stub,
    Tokens,
    backends_waiting_for_locks,
    bearer,
    error_info,
    listed_ids,
    login,
    refresh,
    refresh_failure,
    register,
    validate,
)
from tests.integration.test_metrics import metrics_server, samples, value
from tests.processes import WAIT, eventually, started

pytestmark = pytest.mark.asyncio

LIMIT_REACHED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "SESSION_LIMIT_REACHED")
INVALID_CREDENTIALS = (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
MINUTE = timedelta(minutes=1)


async def evicting(launch: Launch, limit: int = 2) -> Stub:
    return (await launch(session_limit=str(limit))).stub


async def refusing(launch: Launch, limit: int = 2) -> Stub:
    return (await launch(session_limit=str(limit), session_limit_policy="refuse")).stub


async def login_failure(stub: Stub, password: str | None = None) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await (login(stub) if password is None else login(stub, password=password))
    code, reason, _ = error_info(caught.value)
    return code, reason


async def three_logins_with_the_first_refreshed_last(
    stub: Stub, clock: FrozenClock
) -> tuple[Tokens, Tokens, Tokens]:
    """Two sessions, the first refreshed after the second started (so the second is the
    least recently active), then a third login: (first as refreshed, second, third)."""
    first = await register(stub)
    clock.advance(MINUTE)
    second = await login(stub)
    clock.advance(MINUTE)
    refreshed = await refresh(stub, first.refresh_token)
    clock.advance(MINUTE)
    third = await login(stub)
    return refreshed, second, third


async def live_sessions(pool: Pool, user_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
        uuid.UUID(user_id),
    )
    return count


# --- evict_oldest -------------------------------------------------------------------


async def test_a_login_past_the_limit_ends_the_least_recently_active_session(
    launch: Launch, clock: FrozenClock
) -> None:
    stub = await evicting(launch, limit=2)

    first, second, third = await three_logins_with_the_first_refreshed_last(stub, clock)

    assert await refresh_failure(stub, second.refresh_token) == REVOKED
    assert await listed_ids(stub, third.access_token) == {first.session_id, third.session_id}
    await refresh(stub, first.refresh_token)


async def test_an_evicted_session_is_marked_as_ended_by_the_system_for_the_limit(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    stub = await evicting(launch, limit=2)

    _, second, _ = await three_logins_with_the_first_refreshed_last(stub, clock)

    row = await pool.fetchrow(
        "SELECT revoked_at, end_reason, ended_by_kind, ended_by_session, ended_by_operator"
        " FROM sessions WHERE id = $1",
        uuid.UUID(second.session_id),
    )
    assert row is not None
    assert dict(row) == {
        "revoked_at": clock.now(),
        "end_reason": "session_limit_evicted",
        "ended_by_kind": "system",
        "ended_by_session": None,
        "ended_by_operator": None,
    }


async def test_an_eviction_is_on_the_revocation_feed(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    stub = await evicting(launch, limit=2)

    _, second, _ = await three_logins_with_the_first_refreshed_last(stub, clock)

    entries = await PgRevocationLog(pool).read_after(0, limit=100)
    assert [(str(e.session_id), e.reason) for e in entries] == [
        (second.session_id, SessionEndReason.SESSION_LIMIT_EVICTED)
    ]


async def test_the_evicting_server_refuses_the_evicted_access_token_before_it_answers(
    launch: Launch, clock: FrozenClock
) -> None:
    stub = await evicting(launch, limit=1)
    phone = await register(stub)
    validate_phone_first = await validate(stub, phone.access_token)  # cached as live

    await login(stub)

    validation = await validate(stub, phone.access_token)
    assert validate_phone_first.active
    assert (validation.active, validation.inactive_reason) == (False, "SESSION_REVOKED")


async def test_an_eviction_is_audited_with_the_session_that_caused_it(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    stub = await evicting(launch, limit=2)

    _, second, third = await three_logins_with_the_first_refreshed_last(stub, clock)

    rows = await pool.fetch(
        "SELECT session_id, user_id, detail FROM audit_events WHERE event = 'session_evicted'"
    )
    assert [(str(r["session_id"]), str(r["user_id"])) for r in rows] == [
        (second.session_id, second.user_id)
    ]
    assert rows[0]["detail"] == {"by_session_id": third.session_id, "session_limit": 2}


async def test_evictions_and_refusals_are_counted_in_metrics(
    launch: Launch, clock: FrozenClock
) -> None:
    evicts, evicts_port = await metrics_server(launch, session_limit="1")
    refuses, _ = await metrics_server(launch, session_limit="1", session_limit_policy="refuse")
    await register(evicts, "ada@example.com")
    await register(refuses, "bob@example.com")
    before = await samples(evicts_port)  # one registry: both servers are in this process

    await login(evicts, "ada@example.com")
    await login(evicts, "ada@example.com")
    with pytest.raises(grpc.aio.AioRpcError):
        await login(refuses, "bob@example.com")

    after = await samples(evicts_port)
    ended = "authsvc_sessions_ended_total"
    labels = {"reason": "session_limit_evicted", "kind": "revoked"}
    refused = "authsvc_logins_total"
    assert value(after, ended, **labels) - value(before, ended, **labels) == 2
    assert (
        value(after, refused, outcome="session_limit")
        - value(before, refused, outcome="session_limit")
        == 1
    )


async def test_a_newly_set_limit_evicts_every_session_beyond_it_at_the_next_login(
    launch: Launch, pool: Pool
) -> None:
    before = (await launch()).stub
    first = await register(before)
    for _ in range(4):
        await login(before)
    after = await evicting(launch, limit=2)

    kept = await login(after)

    assert await live_sessions(pool, first.user_id) == 2
    assert len(await listed_ids(after, kept.access_token)) == 2


async def test_register_that_signs_in_starts_its_session_under_the_limit(
    launch: Launch, pool: Pool
) -> None:
    stub = (await launch(session_limit="1", registration_reveals_accounts="true")).stub

    registered = await stub.Register(pb.RegisterRequest(email="ada@example.com", password=PASSWORD))
    second = await login(stub, "ada@example.com")

    assert await refresh_failure(stub, registered.refresh_token) == REVOKED
    assert await live_sessions(pool, second.user_id) == 1


# --- limit 1: single-session mode ---------------------------------------------------


async def test_single_session_mode_keeps_only_the_latest_login(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    stub = await evicting(launch, limit=1)
    phone = await register(stub)
    clock.advance(MINUTE)
    laptop = await login(stub)
    clock.advance(MINUTE)

    tablet = await login(stub)

    assert await refresh_failure(stub, phone.refresh_token) == REVOKED
    assert await refresh_failure(stub, laptop.refresh_token) == REVOKED
    assert await listed_ids(stub, tablet.access_token) == {tablet.session_id}
    assert await live_sessions(pool, tablet.user_id) == 1


async def test_single_session_mode_refusing_keeps_the_first_session(launch: Launch) -> None:
    stub = await refusing(launch, limit=1)
    phone = await register(stub)

    assert await login_failure(stub) == LIMIT_REACHED
    await refresh(stub, phone.refresh_token)


# --- refuse -------------------------------------------------------------------------


async def test_a_login_past_the_limit_is_refused_after_a_correct_password(
    launch: Launch, pool: Pool
) -> None:
    stub = await refusing(launch, limit=2)
    first = await register(stub)
    await login(stub)

    assert await login_failure(stub) == LIMIT_REACHED
    assert await live_sessions(pool, first.user_id) == 2


async def test_a_refused_login_writes_only_its_audit_event(launch: Launch, pool: Pool) -> None:
    stub = await refusing(launch, limit=1)
    first = await register(stub)
    counts = (
        "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM refresh_tokens),"
        " (SELECT count(*) FROM revocation_log)"
    )
    before = await pool.fetchrow(counts)
    events_before = await pool.fetchval("SELECT max(id) FROM audit_events")

    await login_failure(stub)

    new_events = await pool.fetch(
        "SELECT event, user_id, detail FROM audit_events WHERE id > $1", events_before
    )
    assert await pool.fetchrow(counts) == before
    assert [(r["event"], str(r["user_id"])) for r in new_events] == [
        ("login_failed", first.user_id)
    ]
    assert new_events[0]["detail"] == {"reason": "session_limit_reached", "session_limit": 1}


async def test_a_wrong_password_past_the_limit_is_still_invalid_credentials(
    launch: Launch,
) -> None:
    stub = await refusing(launch, limit=1)
    await register(stub)

    assert await login_failure(stub, password="not the password") == INVALID_CREDENTIALS


async def test_after_a_logout_a_refused_user_signs_in_again(launch: Launch) -> None:
    stub = await refusing(launch, limit=1)
    phone = await register(stub)
    assert await login_failure(stub) == LIMIT_REACHED

    await stub.Logout(pb.LogoutRequest(), metadata=bearer(phone.access_token))

    await login(stub)


async def test_expired_sessions_do_not_count_toward_the_limit(
    launch: Launch, clock: FrozenClock
) -> None:
    stub = (
        await launch(session_limit="1", session_limit_policy="refuse", session_idle_timeout="1h")
    ).stub
    await register(stub)
    clock.advance(timedelta(hours=1, seconds=1))

    await login(stub)


# --- the lock -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "outcomes"),
    [("evict_oldest", ["OK", "OK"]), ("refuse", ["OK", "SESSION_LIMIT_REACHED"])],
)
async def test_with_a_limit_a_login_waits_for_another_login_of_the_same_user(
    launch: Launch, pool: Pool, policy: str, outcomes: list[str]
) -> None:
    # The user has one session and a limit of 2. The first login has counted and inserted
    # its session, and waits (on the audit table) before it commits; the second must wait
    # for it on the user's row, then count its session, rather than both fitting in.
    stub = (await launch(session_limit="2", session_limit_policy=policy)).stub
    first = await register(stub)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")
        one = started(login(stub))
        await eventually(lambda: _waiting(pool, 1))
        other = started(login(stub))
        await eventually(lambda: _waiting(pool, 2))

    answers = await asyncio.gather(one, other, return_exceptions=True)
    assert [outcome_of(answer) for answer in answers] == outcomes
    assert await live_sessions(pool, first.user_id) == 2


def outcome_of(answer: object) -> str:
    """A Login's answer from gather(..., return_exceptions=True): "OK" or its reason."""
    if isinstance(answer, grpc.aio.AioRpcError):
        return error_info(answer)[1]
    assert isinstance(answer, pb.LoginResponse), answer
    return "OK"


async def test_without_a_limit_logins_take_no_lock_on_the_user(launch: Launch, pool: Pool) -> None:
    # A lock that conflicts with the limit's FOR UPDATE, not with the key-share lock
    # every session insert takes on its user.
    stub = (await launch()).stub
    first = await register(stub)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(first.user_id)
        )
        async with asyncio.timeout(WAIT):
            await login(stub)


async def test_with_a_limit_a_login_takes_the_lock_on_the_user(launch: Launch, pool: Pool) -> None:
    stub = await evicting(launch, limit=3)
    first = await register(stub)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(first.user_id)
        )
        waiting = started(login(stub))
        await eventually(lambda: _waiting(pool, 1))
        assert not waiting.done()

    await waiting


async def _waiting(pool: Pool, count: int) -> bool:
    return await backends_waiting_for_locks(pool) >= count
