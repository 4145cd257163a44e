"""Error paths over a real socket against a real PostgreSQL.

Each refusal is checked for its status code and ErrorInfo reason (and the
field it names), and for leaving the user's sessions as they were.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.domain.throttle import SIGN_UP_BUCKET_PREFIX
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import (
    Stub,
    Tokens,
    bearer,
    error_info,
    listed_ids,
    login,
    refresh,
    register,
    sign_in,
    validate,
)

pytestmark = pytest.mark.asyncio

BOB = "bob@example.com"
# The documented limits (protos/authsvc/v1/auth_service.proto, authsvc/api/servicer.py).
MAX_DEVICE_NAME = 100
MAX_REVOKE_REASON = 200
MAX_REFRESH_TOKEN_FIELD = 1024

# An access-token TTL beyond the idle timeout: each token is capped at its session's deadline.
IDLE_SETTINGS: dict[str, Any] = {"session_idle_timeout": "1h", "access_token_ttl": "2h"}
IDLE_TIMEOUT = timedelta(hours=1)

Rejection = tuple[grpc.StatusCode, str, dict[str, str]]

ALL_SCOPES = pytest.mark.parametrize(
    "scope",
    [pb.LOGOUT_SCOPE_THIS_SESSION, pb.LOGOUT_SCOPE_OTHER_SESSIONS, pb.LOGOUT_SCOPE_ALL_SESSIONS],
    ids=["this-session", "other-sessions", "all-sessions"],
)


def invalid_field(field: str) -> Rejection:
    return grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": field}


def unauthenticated(reason: str) -> Rejection:
    return grpc.StatusCode.UNAUTHENTICATED, reason, {}


def ended(reason: str, end_reason: str, ended_at: datetime) -> Rejection:
    """A refusal because the session ended: why and when, in the ErrorInfo metadata."""
    return (
        grpc.StatusCode.UNAUTHENTICATED,
        reason,
        {
            "end_reason": f"SESSION_END_REASON_{end_reason}",
            "ended_at": ended_at.isoformat().replace("+00:00", "Z"),
        },
    )


async def rejection(call: Awaitable[Any]) -> Rejection:
    """(code, reason, metadata) of a call that must fail; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_info(caught.value)


async def still_works(stub: Stub, session: Tokens) -> bool:
    """The session's access token validates and its refresh token rotates."""
    validated = await validate(stub, session.access_token)
    refreshed = await refresh(stub, session.refresh_token)
    return validated.active and refreshed.session_id == session.session_id


async def is_revoked(stub: Stub, session: Tokens) -> bool:
    """Both of the session's tokens are refused because the session was revoked."""
    validated = await validate(stub, session.access_token)
    refused = await rejection(refresh(stub, session.refresh_token))
    return (validated.active, validated.inactive_reason) == (False, "SESSION_REVOKED") and (
        refused[:2] == unauthenticated("SESSION_REVOKED")[:2]
    )


async def logout_by_refresh_token(
    stub: Stub, refresh_token: str, scope: pb.LogoutScope.ValueType
) -> int:
    """Logout authenticated only by a refresh token: no authorization metadata."""
    response = await stub.Logout(pb.LogoutRequest(scope=scope, refresh_token=refresh_token))
    count: int = response.revoked_session_count
    return count


async def session_count(pool: Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM sessions")
    return count


async def revoked_at(pool: Pool, session_id: str) -> object:
    return await pool.fetchval(
        "SELECT revoked_at FROM sessions WHERE id = $1", uuid.UUID(session_id)
    )


async def one_idle_expired_one_live(
    launch: Launch, clock: FrozenClock
) -> tuple[Stub, Tokens, Tokens]:
    """A user with a session past its idle deadline, and a live session; nothing has been
    swept. (Its access token was minted for longer than the idle timeout, but is capped
    at the session's deadline: its refusal still says the session expired.)"""
    stub = (await launch(**IDLE_SETTINGS)).stub
    expired = await register(stub)
    clock.advance(timedelta(minutes=50))
    live = await login(stub)
    clock.advance(timedelta(minutes=11))
    assert clock.now() > expired.refresh_token_expires_at.ToDatetime(tzinfo=UTC)
    return stub, expired, live


def idle_deadline(session: Tokens) -> datetime:
    return session.refresh_token_expires_at.ToDatetime(tzinfo=UTC)


# --- Logout by refresh token: wider scopes --------------------------------


async def test_logout_by_refresh_token_with_other_sessions_scope_ends_only_the_others(
    stub: Stub,
) -> None:
    caller, *others = await sign_in(stub, 3)
    (bob,) = await sign_in(stub, 1, email=BOB)

    count = await logout_by_refresh_token(
        stub, caller.refresh_token, pb.LOGOUT_SCOPE_OTHER_SESSIONS
    )

    assert count == 2
    for other in others:
        assert await is_revoked(stub, other)
    assert await listed_ids(stub, caller.access_token) == {caller.session_id}
    assert await still_works(stub, caller)
    assert await still_works(stub, bob)


async def test_logout_by_refresh_token_with_all_sessions_scope_ends_every_session_of_the_user(
    stub: Stub,
) -> None:
    alice = await sign_in(stub, 3)
    (bob,) = await sign_in(stub, 1, email=BOB)

    count = await logout_by_refresh_token(
        stub, alice[1].refresh_token, pb.LOGOUT_SCOPE_ALL_SESSIONS
    )

    assert count == 3
    for session in alice:
        assert await is_revoked(stub, session)
    assert await still_works(stub, bob)


# --- Logout by a refresh token that cannot log out -------------------------


@ALL_SCOPES
async def test_logout_by_an_unknown_refresh_token_is_refresh_token_invalid_and_revokes_nothing(
    stub: Stub, scope: pb.LogoutScope.ValueType
) -> None:
    sessions = await sign_in(stub, 2)
    never_issued = secrets.token_urlsafe(32)  # the shape of a real token

    refused = await rejection(logout_by_refresh_token(stub, never_issued, scope))

    assert refused == unauthenticated("REFRESH_TOKEN_INVALID")
    assert await listed_ids(stub, sessions[0].access_token) == {s.session_id for s in sessions}
    for session in sessions:
        assert await still_works(stub, session)


@ALL_SCOPES
async def test_logout_by_the_refresh_token_of_a_revoked_session_is_session_revoked(
    stub: Stub, clock: FrozenClock, scope: pb.LogoutScope.ValueType
) -> None:
    caller, victim, kept = await sign_in(stub, 3)
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=victim.session_id), metadata=bearer(caller.access_token)
    )

    refused = await rejection(logout_by_refresh_token(stub, victim.refresh_token, scope))

    assert refused == ended("SESSION_REVOKED", "USER_REVOKED", clock.now())
    assert await listed_ids(stub, caller.access_token) == {caller.session_id, kept.session_id}
    assert await still_works(stub, caller)
    assert await still_works(stub, kept)


# --- an unexpired access token of an idle-expired session -----------------


@ALL_SCOPES
async def test_logout_with_the_access_token_of_an_idle_expired_session_is_session_expired(
    launch: Launch, clock: FrozenClock, scope: pb.LogoutScope.ValueType
) -> None:
    stub, expired, live = await one_idle_expired_one_live(launch, clock)

    refused = await rejection(
        stub.Logout(pb.LogoutRequest(scope=scope), metadata=bearer(expired.access_token))
    )

    assert refused == ended("SESSION_EXPIRED", "IDLE_TIMEOUT", idle_deadline(expired))
    assert await listed_ids(stub, live.access_token) == {live.session_id}
    assert await still_works(stub, live)


async def test_list_sessions_with_the_access_token_of_an_idle_expired_session_is_session_expired(
    launch: Launch, clock: FrozenClock
) -> None:
    stub, expired, _live = await one_idle_expired_one_live(launch, clock)

    refused = await rejection(
        stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(expired.access_token))
    )

    assert refused == ended("SESSION_EXPIRED", "IDLE_TIMEOUT", idle_deadline(expired))


async def test_revoke_session_with_the_access_token_of_an_idle_expired_session_is_session_expired(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    stub, expired, live = await one_idle_expired_one_live(launch, clock)

    refused = await rejection(
        stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=live.session_id),
            metadata=bearer(expired.access_token),
        )
    )

    assert refused == ended("SESSION_EXPIRED", "IDLE_TIMEOUT", idle_deadline(expired))
    assert await revoked_at(pool, live.session_id) is None
    assert await still_works(stub, live)


async def test_idle_expired_session_not_yet_swept_is_not_listed_to_a_live_session(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    stub, expired, live = await one_idle_expired_one_live(launch, clock)

    listed = await listed_ids(stub, live.access_token)

    assert listed == {live.session_id}
    # Still on record and never revoked: only its idle deadline hides it.
    assert await pool.fetchval(
        "SELECT revoked_at IS NULL FROM sessions WHERE id = $1", uuid.UUID(expired.session_id)
    )


# --- Login input ------------------------------------------------------------


async def test_login_with_an_empty_password_names_the_password_field_and_starts_no_session(
    stub: Stub, pool: Pool
) -> None:
    registered = await register(stub)

    refused = await rejection(login(stub, password=""))

    assert refused == invalid_field("password")
    assert await session_count(pool) == 1
    # Not counted as a failed attempt: a malformed request must not lock the account.
    assert (
        await pool.fetchval(
            "SELECT coalesce(sum(failures), 0) FROM login_failures"
            " WHERE NOT starts_with(bucket, $1)",
            SIGN_UP_BUCKET_PREFIX,
        )
        == 0
    )
    assert await still_works(stub, registered)


async def test_login_with_a_device_name_over_100_characters_names_the_field_and_starts_no_session(
    stub: Stub, pool: Pool
) -> None:
    registered = await register(stub)

    refused = await rejection(login(stub, device_name="d" * (MAX_DEVICE_NAME + 1)))

    assert refused == invalid_field("device_name")
    assert await session_count(pool) == 1
    assert await listed_ids(stub, registered.access_token) == {registered.session_id}


async def test_login_accepts_a_device_name_of_exactly_100_characters(stub: Stub) -> None:
    await register(stub)

    signed_in = await login(stub, device_name="d" * MAX_DEVICE_NAME)

    assert signed_in.session_id


# --- RevokeSession input ----------------------------------------------------


async def test_revoke_session_with_a_reason_over_200_characters_names_the_field_and_keeps_it(
    stub: Stub, pool: Pool
) -> None:
    caller, target = await sign_in(stub, 2)

    refused = await rejection(
        stub.RevokeSession(
            pb.RevokeSessionRequest(
                session_id=target.session_id, reason="r" * (MAX_REVOKE_REASON + 1)
            ),
            metadata=bearer(caller.access_token),
        )
    )

    assert refused == invalid_field("reason")
    assert await revoked_at(pool, target.session_id) is None
    assert await listed_ids(stub, caller.access_token) == {caller.session_id, target.session_id}
    assert await still_works(stub, target)


async def test_revoke_session_with_an_empty_session_id_names_the_session_id_field(
    stub: Stub, pool: Pool
) -> None:
    caller, other = await sign_in(stub, 2)

    refused = await rejection(
        stub.RevokeSession(pb.RevokeSessionRequest(), metadata=bearer(caller.access_token))
    )

    assert refused == invalid_field("session_id")
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL") == 0
    assert await still_works(stub, caller)
    assert await still_works(stub, other)


# --- over-long refresh tokens -----------------------------------------------


async def test_refresh_with_a_token_over_1024_characters_names_the_refresh_token_field(
    stub: Stub,
) -> None:
    session = await register(stub)

    refused = await rejection(refresh(stub, "A" * (MAX_REFRESH_TOKEN_FIELD + 1)))

    assert refused == invalid_field("refresh_token")
    assert await still_works(stub, session)


async def test_refresh_with_a_token_of_exactly_1024_characters_is_refresh_token_invalid(
    stub: Stub,
) -> None:
    session = await register(stub)

    refused = await rejection(refresh(stub, "A" * MAX_REFRESH_TOKEN_FIELD))

    assert refused == unauthenticated("REFRESH_TOKEN_INVALID")
    assert await still_works(stub, session)


async def test_logout_by_a_refresh_token_over_1024_characters_names_the_field_and_revokes_nothing(
    stub: Stub,
) -> None:
    session = await register(stub)

    refused = await rejection(
        logout_by_refresh_token(
            stub, "A" * (MAX_REFRESH_TOKEN_FIELD + 1), pb.LOGOUT_SCOPE_ALL_SESSIONS
        )
    )

    assert refused == invalid_field("refresh_token")
    assert await still_works(stub, session)
