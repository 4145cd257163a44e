"""Session tombstones on a real server and database: every way a session ends is recorded
(when, why, who) and answered by GetSession, for the user and for an operator, until the
ended-session retention; an expired session answers the same before the sweeper marks it
and after."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.core.models import TIMEOUTS, SessionEndReason
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import OPERATOR, AdminLaunched, LaunchAdmin
from tests.helpers import PASSWORD, Tokens, bearer, error_info, login, refresh, register
from tests.integration.second_factor_helpers import enrol_totp

pytestmark = pytest.mark.asyncio

NEW_PASSWORD = "a brand new passphrase"
UNKNOWN_SESSION = "00000000-0000-4000-8000-000000000000"

# What GetSession says about an ended session: (end reason, ended_at, ender kind, ender
# session, ender operator).
Ending = tuple["pb.SessionEndReason.ValueType", datetime, "pb.SessionEnderKind.ValueType", str, str]


@dataclass(frozen=True, slots=True)
class Ended:
    """A session some way of ending ended, a live session of the same user to ask with,
    and what GetSession must say."""

    session: Tokens
    caller: Tokens
    ending: Ending


def instant(message: Any) -> datetime:
    when: datetime = message.ToDatetime(tzinfo=UTC)
    return when


def ending_of(session: pb.Session) -> Ending:
    ender = session.ended_by
    return (
        session.end_reason,
        instant(session.ended_at),
        ender.kind,
        ender.session_id,
        ender.operator,
    )


async def user_view(admin: AdminLaunched, caller: Tokens, session_id: str) -> pb.Session:
    response = await admin.stub.GetSession(
        pb.GetSessionRequest(session_id=session_id), metadata=bearer(caller.access_token)
    )
    session: pb.Session = response.session
    return session


async def operator_view(admin: AdminLaunched, session_id: str) -> pb.Session:
    response = await admin.admin.GetSession(
        admin_pb.AdminServiceGetSessionRequest(session_id=session_id),
        metadata=admin.as_operator,
    )
    session: pb.Session = response.session
    return session


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_info(caught.value)


# --- each way of ending -------------------------------------------------------


async def by_logout(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session, caller = await register(admin.stub), await login(admin.stub)
    await admin.stub.Logout(pb.LogoutRequest(), metadata=bearer(session.access_token))
    user = (pb.SESSION_ENDER_KIND_USER, session.session_id, "")
    return Ended(session, caller, (pb.SESSION_END_REASON_USER_LOGOUT, clock.now(), *user))


async def by_revoke(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session, caller = await register(admin.stub), await login(admin.stub)
    await admin.stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=session.session_id),
        metadata=bearer(caller.access_token),
    )
    user = (pb.SESSION_ENDER_KIND_USER, caller.session_id, "")
    return Ended(session, caller, (pb.SESSION_END_REASON_USER_REVOKED, clock.now(), *user))


async def by_reuse(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session, caller = await register(admin.stub), await login(admin.stub)
    await refresh(admin.stub, session.refresh_token)
    clock.advance(timedelta(minutes=1))  # past the refresh grace
    await failure(refresh(admin.stub, session.refresh_token))
    system = (pb.SESSION_ENDER_KIND_SYSTEM, "", "")
    return Ended(session, caller, (pb.SESSION_END_REASON_REFRESH_TOKEN_REUSE, clock.now(), *system))


async def by_admin_revoke(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session = await register(admin.stub)
    await admin.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=session.user_id, reason="ticket 7"),
        metadata=admin.as_operator,
    )
    ended_at = clock.now()
    clock.advance(timedelta(seconds=1))
    caller = await login(admin.stub)
    operator = (pb.SESSION_ENDER_KIND_OPERATOR, "", OPERATOR)
    return Ended(session, caller, (pb.SESSION_END_REASON_ADMIN_REVOKED, ended_at, *operator))


async def by_disable(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session = await register(admin.stub)
    await admin.admin.DisableUser(
        admin_pb.DisableUserRequest(user_id=session.user_id, reason="fraud"),
        metadata=admin.as_operator,
    )
    ended_at = clock.now()
    clock.advance(timedelta(seconds=1))
    await admin.admin.EnableUser(
        admin_pb.EnableUserRequest(user_id=session.user_id), metadata=admin.as_operator
    )
    caller = await login(admin.stub)
    operator = (pb.SESSION_ENDER_KIND_OPERATOR, "", OPERATOR)
    return Ended(session, caller, (pb.SESSION_END_REASON_USER_DISABLED, ended_at, *operator))


async def by_password_change(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session, caller = await register(admin.stub), await login(admin.stub)
    await admin.stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(caller.access_token),
    )
    user = (pb.SESSION_ENDER_KIND_USER, caller.session_id, "")
    return Ended(session, caller, (pb.SESSION_END_REASON_PASSWORD_CHANGED, clock.now(), *user))


async def by_factor_enrolment(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session, caller = await register(admin.stub), await login(admin.stub)
    await enrol_totp(admin.stub, caller.access_token, clock)
    user = (pb.SESSION_ENDER_KIND_USER, caller.session_id, "")
    return Ended(session, caller, (pb.SESSION_END_REASON_SECOND_FACTOR_CHANGED, clock.now(), *user))


async def by_password_reset(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    session = await register(admin.stub)
    issued = await admin.admin.CreatePasswordResetToken(
        admin_pb.CreatePasswordResetTokenRequest(user_id=session.user_id),
        metadata=admin.as_operator,
    )
    await admin.stub.ResetPassword(
        pb.ResetPasswordRequest(reset_token=issued.reset_token, new_password=NEW_PASSWORD)
    )
    ended_at = clock.now()
    clock.advance(timedelta(seconds=1))
    caller = await login(admin.stub, password=NEW_PASSWORD)
    # The user, by a call that had no session.
    user = (pb.SESSION_ENDER_KIND_USER, "", "")
    return Ended(session, caller, (pb.SESSION_END_REASON_PASSWORD_RESET, ended_at, *user))


async def by_idle_timeout(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    # Idle timeout 1h, lifetime 7d (the defaults but the idle timeout).
    session = await register(admin.stub)
    clock.advance(timedelta(minutes=61))
    caller = await login(admin.stub)
    system = (pb.SESSION_ENDER_KIND_SYSTEM, "", "")
    deadline = instant(session.refresh_token_expires_at)
    return Ended(session, caller, (pb.SESSION_END_REASON_IDLE_TIMEOUT, deadline, *system))


async def by_absolute_timeout(admin: AdminLaunched, clock: FrozenClock) -> Ended:
    # Idle timeout 1h, lifetime 90m: refreshed at 50m, its idle deadline is capped at 90m.
    session = await register(admin.stub)
    clock.advance(timedelta(minutes=50))
    refreshed = await refresh(admin.stub, session.refresh_token)
    clock.advance(timedelta(minutes=41))
    caller = await login(admin.stub)
    system = (pb.SESSION_ENDER_KIND_SYSTEM, "", "")
    deadline = instant(refreshed.refresh_token_expires_at)
    return Ended(refreshed, caller, (pb.SESSION_END_REASON_ABSOLUTE_TIMEOUT, deadline, *system))


End = Callable[[AdminLaunched, FrozenClock], Awaitable[Ended]]
EXPIRY: dict[str, str] = {"session_idle_timeout": "1h"}
ENDINGS: dict[str, tuple[End, dict[str, str]]] = {
    "logout": (by_logout, {}),
    "revoke": (by_revoke, {}),
    "reuse": (by_reuse, {}),
    "admin-revoke": (by_admin_revoke, {}),
    "disable": (by_disable, {}),
    "password-change": (by_password_change, {}),
    "password-reset": (by_password_reset, {}),
    "factor-enrolment": (by_factor_enrolment, {}),
    "idle-timeout": (by_idle_timeout, EXPIRY),
    "absolute-timeout": (by_absolute_timeout, {**EXPIRY, "session_lifetime": "90m"}),
}


@pytest.mark.parametrize("way", list(ENDINGS))
async def test_get_session_answers_when_why_and_who_ended_it_to_the_user_and_an_operator(
    launch_admin: LaunchAdmin, clock: FrozenClock, way: str
) -> None:
    end, settings = ENDINGS[way]
    admin = await launch_admin(**settings)
    ended = await end(admin, clock)

    mine = await user_view(admin, ended.caller, ended.session.session_id)
    operators = await operator_view(admin, ended.session.session_id)

    # The user is told an operator ended it, not which one (the audit trail says).
    reason, ended_at, kind, session_id, _operator = ended.ending
    assert ending_of(mine) == (reason, ended_at, kind, session_id, "")
    assert ending_of(operators) == ended.ending
    for view in (mine, operators):
        assert (view.session_id, view.user_id, view.current) == (
            ended.session.session_id,
            ended.session.user_id,
            False,
        )


@pytest.mark.parametrize("way", ["idle-timeout", "absolute-timeout"])
async def test_an_expired_session_answers_the_same_before_and_after_the_sweeper_marks_it(
    launch_admin: LaunchAdmin, clock: FrozenClock, pool: Pool, way: str
) -> None:
    end, settings = ENDINGS[way]
    admin = await launch_admin(**settings)
    ended = await end(admin, clock)
    session_id = ended.session.session_id
    before = (
        await user_view(admin, ended.caller, session_id),
        await operator_view(admin, session_id),
        await failure(refresh(admin.stub, ended.session.refresh_token)),
    )

    counts = await admin.server.sweeper.run_once()

    after = (
        await user_view(admin, ended.caller, session_id),
        await operator_view(admin, session_id),
        await failure(refresh(admin.stub, ended.session.refresh_token)),
    )
    assert counts is not None
    assert counts["expired_sessions"] == 1
    assert await pool.fetchval(
        "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1", uuid.UUID(session_id)
    )
    assert after == before
    assert ending_of(after[0]) == ending_of(after[1]) == ended.ending
    assert after[2][:2] == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_EXPIRED")


async def test_get_session_of_a_live_session_marks_the_callers_own_as_current(
    admin_server: AdminLaunched,
) -> None:
    caller = await register(admin_server.stub)

    mine = await user_view(admin_server, caller, caller.session_id)

    assert (mine.current, mine.HasField("ended_at"), mine.HasField("ended_by")) == (
        True,
        False,
        False,
    )
    assert mine.end_reason == pb.SESSION_END_REASON_UNSPECIFIED


async def test_get_session_of_another_users_session_is_the_same_answer_as_an_unknown_id(
    admin_server: AdminLaunched,
) -> None:
    alice = await register(admin_server.stub)
    bob = await register(admin_server.stub, email="bob@example.com")

    others = await failure(user_view(admin_server, alice, bob.session_id))
    unknown = await failure(user_view(admin_server, alice, UNKNOWN_SESSION))

    assert others == unknown == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND", {})


async def test_operator_get_session_of_an_unknown_id_is_not_found_and_audited(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    refused = await failure(operator_view(admin_server, UNKNOWN_SESSION))

    rows = await pool.fetch(
        "SELECT session_id, detail FROM audit_events WHERE event = 'admin_session_viewed'"
    )
    assert refused == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND", {})
    assert [
        (str(row["session_id"]), row["detail"]["operator"], row["detail"]["found"]) for row in rows
    ] == [(UNKNOWN_SESSION, OPERATOR, False)]


async def test_a_deleted_users_sessions_are_erased_with_the_account_and_the_feed_says_why(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    session = await register(admin_server.stub)

    await admin_server.admin.DeleteUser(
        admin_pb.DeleteUserRequest(user_id=session.user_id, reason="erasure request"),
        metadata=admin_server.as_operator,
    )

    refused = await failure(operator_view(admin_server, session.session_id))
    logged = await PgRevocationLog(pool).read_after(0, limit=10)
    assert refused[:2] == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    assert [(str(entry.session_id), entry.reason) for entry in logged] == [
        (session.session_id, SessionEndReason.USER_DELETED)
    ]


# --- retention ----------------------------------------------------------------


async def test_the_sweeper_keeps_a_tombstone_until_the_retention_then_removes_it_and_its_tokens(
    launch_admin: LaunchAdmin, clock: FrozenClock, pool: Pool
) -> None:
    admin = await launch_admin(ended_session_retention="1d")
    ended = await by_logout(admin, clock)
    clock.advance(timedelta(hours=23))
    await admin.server.sweeper.run_once()
    kept = await operator_view(admin, ended.session.session_id)
    clock.advance(timedelta(hours=2))

    await admin.server.sweeper.run_once()

    assert ending_of(kept) == ended.ending
    assert (await failure(operator_view(admin, ended.session.session_id)))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    tokens = await pool.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = $1",
        uuid.UUID(ended.session.session_id),
    )
    assert tokens == 0


# --- the feed -----------------------------------------------------------------


async def test_the_feed_carries_each_revocations_reason_and_no_expiry(
    launch_admin: LaunchAdmin, clock: FrozenClock, pool: Pool
) -> None:
    admin = await launch_admin(**EXPIRY)
    expired = await by_idle_timeout(admin, clock)
    # Ends every other live session of the user: the idle one had ended already.
    changed = await by_password_change(admin, clock)
    await admin.server.sweeper.run_once()

    logged = await PgRevocationLog(pool).read_after(0, limit=100)

    assert (
        await pool.fetchval(
            "SELECT end_reason FROM sessions WHERE id = $1", uuid.UUID(expired.session.session_id)
        )
        == "idle_timeout"
    )
    reasons = {str(entry.session_id): entry.reason for entry in logged}
    assert expired.session.session_id not in reasons
    assert reasons[changed.session.session_id] is SessionEndReason.PASSWORD_CHANGED
    assert set(reasons.values()) == {SessionEndReason.PASSWORD_CHANGED}


async def by_deletion(admin: AdminLaunched, _: FrozenClock) -> str:
    session = await register(admin.stub)
    await admin.admin.DeleteUser(
        admin_pb.DeleteUserRequest(user_id=session.user_id, reason="erasure request"),
        metadata=admin.as_operator,
    )
    return session.session_id


async def by_bulk_revocation(admin: AdminLaunched, _: FrozenClock) -> str:
    session = await register(admin.stub)
    await admin.admin.RevokeSessions(
        admin_pb.RevokeSessionsRequest(
            filter=admin_pb.SessionFilter(user_ids=[session.user_id]), reason="incident 42"
        ),
        metadata=admin.as_operator,
    )
    return session.session_id


async def by_session_limit(admin: AdminLaunched, clock: FrozenClock) -> str:
    session = await register(admin.stub)
    clock.advance(timedelta(seconds=1))
    await login(admin.stub)
    return session.session_id


def ended_session(end: End) -> Callable[[AdminLaunched, FrozenClock], Awaitable[str]]:
    async def ended_id(admin: AdminLaunched, clock: FrozenClock) -> str:
        return (await end(admin, clock)).session.session_id

    return ended_id


# Every reason, ended through the public API as production ends it: a new reason fails
# here until it has its way of ending (and so its check that the store logged it).
FEED_ENDINGS: dict[
    SessionEndReason, tuple[Callable[[AdminLaunched, FrozenClock], Awaitable[str]], dict[str, str]]
] = {
    SessionEndReason.USER_LOGOUT: (ended_session(by_logout), {}),
    SessionEndReason.USER_REVOKED: (ended_session(by_revoke), {}),
    SessionEndReason.REFRESH_TOKEN_REUSE: (ended_session(by_reuse), {}),
    SessionEndReason.ADMIN_REVOKED: (ended_session(by_admin_revoke), {}),
    SessionEndReason.USER_DISABLED: (ended_session(by_disable), {}),
    SessionEndReason.PASSWORD_CHANGED: (ended_session(by_password_change), {}),
    SessionEndReason.PASSWORD_RESET: (ended_session(by_password_reset), {}),
    SessionEndReason.USER_DELETED: (by_deletion, {}),
    SessionEndReason.IDLE_TIMEOUT: (ended_session(by_idle_timeout), ENDINGS["idle-timeout"][1]),
    SessionEndReason.ABSOLUTE_TIMEOUT: (
        ended_session(by_absolute_timeout),
        ENDINGS["absolute-timeout"][1],
    ),
    SessionEndReason.BULK_REVOKED: (by_bulk_revocation, {}),
    SessionEndReason.SESSION_LIMIT_EVICTED: (by_session_limit, {"session_limit": "1"}),
    SessionEndReason.SECOND_FACTOR_CHANGED: (ended_session(by_factor_enrolment), {}),
}


@pytest.mark.parametrize("reason", list(SessionEndReason), ids=lambda reason: reason.value)
async def test_every_ending_but_an_expiry_reaches_the_revocation_feed_once(
    launch_admin: LaunchAdmin, pool: Pool, clock: FrozenClock, reason: SessionEndReason
) -> None:
    # The store appends each ending (migration 0024): a statement that ends sessions and
    # forgets to append fails its reason here. The sweeper marks the expiries.
    end, settings = FEED_ENDINGS[reason]
    admin = await launch_admin(**settings)
    session_id = await end(admin, clock)

    await admin.server.sweeper.run_once()

    logged = await PgRevocationLog(pool).read_after(0, limit=10)
    expected = [] if reason in TIMEOUTS else [(session_id, reason)]
    assert [(str(entry.session_id), entry.reason) for entry in logged] == expected
