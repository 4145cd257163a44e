"""The revocation log (migrations 0014 and 0024): every ending appended once, in its own
transaction, in commit order, over a real server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.core.models import (
    SYSTEM,
    AuditEvent,
    Revocation,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.domain.refresh_tokens import hash_refresh_token
from authsvc.domain.revocations import RevocationBatch, RevocationFeed
from authsvc.store.pool import Pool
from authsvc.store.revocations import APPLICATION_NAME, PgRevocationLog
from authsvc.store.sessions import PgSessionStore
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import Stub, Tokens, bearer, login, refresh, refresh_failure, sign_in
from tests.processes import WAIT, eventually

pytestmark = pytest.mark.asyncio

# The default refresh_grace_period is 10s.
PAST_GRACE = timedelta(seconds=11)


async def logged(pool: Pool) -> list[Revocation]:
    return await PgRevocationLog(pool).read_after(0, limit=1000)


def ended(entries: list[Revocation]) -> list[tuple[str, SessionEndReason]]:
    return sorted((str(entry.session_id), entry.reason) for entry in entries)


async def logout(stub: Stub, caller: Tokens, scope: pb.LogoutScope.ValueType) -> None:
    await stub.Logout(pb.LogoutRequest(scope=scope), metadata=bearer(caller.access_token))


async def logout_this(stub: Stub, sessions: list[Tokens], _: FrozenClock) -> list[Tokens]:
    await logout(stub, sessions[0], pb.LOGOUT_SCOPE_THIS_SESSION)
    return sessions[:1]


async def logout_others(stub: Stub, sessions: list[Tokens], _: FrozenClock) -> list[Tokens]:
    await logout(stub, sessions[0], pb.LOGOUT_SCOPE_OTHER_SESSIONS)
    return sessions[1:]


async def logout_all(stub: Stub, sessions: list[Tokens], _: FrozenClock) -> list[Tokens]:
    await logout(stub, sessions[0], pb.LOGOUT_SCOPE_ALL_SESSIONS)
    return sessions


async def logout_by_refresh_token(
    stub: Stub, sessions: list[Tokens], _: FrozenClock
) -> list[Tokens]:
    await stub.Logout(pb.LogoutRequest(refresh_token=sessions[1].refresh_token))
    return sessions[1:2]


async def revoke_session(stub: Stub, sessions: list[Tokens], _: FrozenClock) -> list[Tokens]:
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=sessions[2].session_id),
        metadata=bearer(sessions[0].access_token),
    )
    return sessions[2:3]


async def reuse_refresh_token(
    stub: Stub, sessions: list[Tokens], clock: FrozenClock
) -> list[Tokens]:
    await refresh(stub, sessions[1].refresh_token)
    clock.advance(PAST_GRACE)
    await refresh_failure(stub, sessions[1].refresh_token)
    return sessions[1:2]


Ending = Callable[[Stub, list[Tokens], FrozenClock], Awaitable[list[Tokens]]]


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (logout_this, SessionEndReason.USER_LOGOUT),
        (logout_others, SessionEndReason.USER_LOGOUT),
        (logout_all, SessionEndReason.USER_LOGOUT),
        (logout_by_refresh_token, SessionEndReason.USER_LOGOUT),
        (revoke_session, SessionEndReason.USER_REVOKED),
        (reuse_refresh_token, SessionEndReason.REFRESH_TOKEN_REUSE),
    ],
    ids=lambda value: getattr(value, "__name__", None) or value.value,
)
async def test_every_ending_is_logged_once_with_its_reason(
    stub: Stub, pool: Pool, clock: FrozenClock, end: Ending, reason: SessionEndReason
) -> None:
    sessions = await sign_in(stub, 3)

    gone = await end(stub, sessions, clock)

    assert ended(await logged(pool)) == sorted((s.session_id, reason) for s in gone)


async def test_ending_a_session_again_logs_nothing_more(stub: Stub, pool: Pool) -> None:
    sessions = await sign_in(stub, 2)
    await logout(stub, sessions[0], pb.LOGOUT_SCOPE_THIS_SESSION)

    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=sessions[0].session_id),
        metadata=bearer(sessions[1].access_token),
    )

    assert ended(await logged(pool)) == [(sessions[0].session_id, SessionEndReason.USER_LOGOUT)]


async def test_the_sweeper_deletes_entries_past_the_retention_and_keeps_recent_ones(
    server: AuthServer, stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    (old,) = await sign_in(stub, 1)
    await logout(stub, old, pb.LOGOUT_SCOPE_THIS_SESSION)
    clock.advance(server.config.effective_revocation_retention)
    recent = await login(stub)
    await logout(stub, recent, pb.LOGOUT_SCOPE_THIS_SESSION)
    clock.advance(timedelta(seconds=1))

    await server.sweeper.run_once()

    assert [str(entry.session_id) for entry in await logged(pool)] == [recent.session_id]


async def test_a_swept_log_says_how_far_it_was_swept(
    server: AuthServer, stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    # A reader below swept_through may have missed entries, whatever the gaps in ids.
    (old,) = await sign_in(stub, 1)
    await logout(stub, old, pb.LOGOUT_SCOPE_THIS_SESSION)
    clock.advance(server.config.effective_revocation_retention + timedelta(seconds=1))
    recent = await login(stub)
    await logout(stub, recent, pb.LOGOUT_SCOPE_THIS_SESSION)
    (swept, kept) = await logged(pool)

    await server.sweeper.run_once()

    bounds = await PgRevocationLog(pool).bounds()
    assert (bounds.swept_through, bounds.latest) == (swept.cursor, kept.cursor)


async def test_a_log_swept_empty_still_knows_its_latest_cursor(
    server: AuthServer, stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    (session,) = await sign_in(stub, 1)
    await logout(stub, session, pb.LOGOUT_SCOPE_THIS_SESSION)
    (entry,) = await logged(pool)
    clock.advance(server.config.effective_revocation_retention + timedelta(seconds=1))

    await server.sweeper.run_once()

    bounds = await PgRevocationLog(pool).bounds()
    assert (bounds.swept_through, bounds.latest) == (entry.cursor, entry.cursor)


async def test_a_logged_entry_says_who_and_when(stub: Stub, pool: Pool, clock: FrozenClock) -> None:
    (session,) = await sign_in(stub, 1)

    await logout(stub, session, pb.LOGOUT_SCOPE_THIS_SESSION)

    (entry,) = await logged(pool)
    assert (str(entry.user_id), entry.revoked_at) == (session.user_id, clock.now())


async def end_under_lock(
    pool: Pool, session: Tokens, clock: FrozenClock, *, before_commit: Awaitable[None]
) -> None:
    """End the session in a transaction of its own that awaits `before_commit` first."""
    store = PgSessionStore(pool)
    user_id, token_hash = (
        UserId(uuid.UUID(session.user_id)),
        hash_refresh_token(session.refresh_token),
    )
    async with store.lock_session_by_token(user_id, token_hash) as held:
        assert held is not None
        await held.revoke(
            now=clock.now(),
            reason="test",
            ended_by=SessionEndReason.USER_REVOKED,
            ender=SYSTEM,
            event=AuditEvent(event="test", occurred_at=clock.now()),
        )
        await before_commit


class Abandoned(Exception):
    """Raised inside a transaction to roll it back."""


async def abandon() -> None:
    raise Abandoned


async def test_a_rolled_back_ending_leaves_no_entry(
    stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    (session,) = await sign_in(stub, 1)

    with pytest.raises(Abandoned):
        await end_under_lock(pool, session, clock, before_commit=abandon())

    assert await logged(pool) == []


async def backend_waits_for_a_lock(pool: Pool) -> bool:
    waiting = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


async def test_cursors_follow_commit_order(stub: Stub, pool: Pool, clock: FrozenClock) -> None:
    # A holds its ending open while B ends another session. Whatever a reader sees in
    # between, it must never later find an entry below the highest cursor it saw: a
    # follower at that cursor would skip it for ever.
    first, second = await sign_in(stub, 2)
    ended_inside, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        ended_inside.set()
        await release.wait()

    holding = asyncio.create_task(end_under_lock(pool, first, clock, before_commit=hold()))
    await ended_inside.wait()
    other = asyncio.create_task(
        PgSessionStore(pool).revoke_session(
            UserId(uuid.UUID(second.user_id)),
            SessionId(uuid.UUID(second.session_id)),
            now=clock.now(),
            reason="test",
            ended_by=SessionEndReason.USER_REVOKED,
            ender=SYSTEM,
            event=AuditEvent(event="test", occurred_at=clock.now()),
        )
    )
    await eventually(lambda: _done_or_waiting(other, pool))
    seen_while_open = await logged(pool)
    release.set()
    await asyncio.gather(holding, other)

    everything = await logged(pool)
    highest_seen = max((entry.cursor for entry in seen_while_open), default=0)
    missed = [entry for entry in everything if entry not in seen_while_open]
    assert all(entry.cursor > highest_seen for entry in missed)
    assert [str(entry.session_id) for entry in everything] == [
        first.session_id,
        second.session_id,
    ]


async def _done_or_waiting(task: asyncio.Task[object], pool: Pool) -> bool:
    return task.done() or await backend_waits_for_a_lock(pool)


# --- the process's feed ---------------------------------------------------------


@dataclass
class Recorder:
    """A FeedObserver that keeps what it is told."""

    batches: list[RevocationBatch] = field(default_factory=list)
    currency: list[bool] = field(default_factory=list)

    def applied(self, batch: RevocationBatch) -> None:
        self.batches.append(batch)

    def currency_changed(self, current: bool) -> None:
        self.currency.append(current)

    def cursors(self) -> list[int]:
        return [entry.cursor for batch in self.batches for entry in batch.revocations]


async def current_feed(server: AuthServer) -> RevocationFeed:
    feed = server.revocation_feed
    assert feed is not None
    async with asyncio.timeout(WAIT):
        await feed.wait_current()
    return feed


async def test_a_feed_tells_its_observers_every_revocation_once_in_cursor_order(
    server: AuthServer, stub: Stub, pool: Pool
) -> None:
    feed = await current_feed(server)
    recorder = Recorder()
    feed.observe(recorder)
    sessions = await sign_in(stub, 4)

    for session in sessions[1:]:
        await logout(stub, session, pb.LOGOUT_SCOPE_THIS_SESSION)
    await logout(stub, sessions[0], pb.LOGOUT_SCOPE_ALL_SESSIONS)

    entries = await logged(pool)
    await eventually(lambda: _has_seen(recorder, entries[-1].cursor))
    assert recorder.cursors() == [entry.cursor for entry in entries]
    assert feed.cursor == entries[-1].cursor


async def _has_seen(recorder: Recorder, cursor: int) -> bool:
    return cursor in recorder.cursors()


async def test_a_feed_whose_connection_is_cut_goes_stale_then_catches_up(
    server: AuthServer, stub: Stub, pool: Pool
) -> None:
    feed = await current_feed(server)
    recorder = Recorder()
    feed.observe(recorder)
    first, second = await sign_in(stub, 2)

    await pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        APPLICATION_NAME,
    )
    await logout(stub, first, pb.LOGOUT_SCOPE_THIS_SESSION)
    await current_feed(server)

    (entry,) = await logged(pool)
    await eventually(lambda: _has_seen(recorder, entry.cursor))
    assert recorder.currency[:2] == [False, True]
    assert await validate_active(stub, second)


async def validate_active(stub: Stub, session: Tokens) -> bool:
    response = await stub.ValidateToken(pb.ValidateTokenRequest(access_token=session.access_token))
    return bool(response.active)
