"""RevokeSession and Logout over a real socket against a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import (
    Stub,
    Tokens,
    bearer,
    error_info,
    listed_ids,
    refresh,
    refresh_failure,
    sign_in,
    validate,
)

pytestmark = pytest.mark.asyncio

BOB = "bob@example.com"


async def revoke(stub: Stub, caller: Tokens, session_id: str, note: str = "") -> None:
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=session_id, reason=note),
        metadata=bearer(caller.access_token),
    )


async def revoke_error(
    stub: Stub, caller: Tokens, session_id: str
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await revoke(stub, caller, session_id)
    return error_info(caught.value)


async def logout(
    stub: Stub, caller: Tokens, scope: pb.LogoutScope.ValueType = pb.LOGOUT_SCOPE_UNSPECIFIED
) -> int:
    response = await stub.Logout(
        pb.LogoutRequest(scope=scope), metadata=bearer(caller.access_token)
    )
    count: int = response.revoked_session_count
    return count


async def validation(stub: Stub, access_token: str) -> tuple[bool, str]:
    """(active, inactive_reason) of the access token."""
    response = await validate(stub, access_token)
    return response.active, response.inactive_reason


async def still_works(stub: Stub, session: Tokens) -> bool:
    """The session's access token validates and its refresh token rotates."""
    active, _ = await validation(stub, session.access_token)
    refreshed = await refresh(stub, session.refresh_token)
    return active and refreshed.session_id == session.session_id


async def refusal(stub: Stub, session: Tokens) -> tuple[tuple[bool, str], str]:
    """How the session's access token validates, and the reason its refresh token fails."""
    validated = await validation(stub, session.access_token)
    try:
        await refresh(stub, session.refresh_token)
    except grpc.aio.AioRpcError as error:
        code, reason, _ = error_info(error)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        return validated, reason
    return validated, "REFRESHED"


REVOKED = ((False, "SESSION_REVOKED"), "SESSION_REVOKED")


async def revoke_reason_of(pool: Pool, session_id: str) -> str | None:
    reason: str | None = await pool.fetchval(
        "SELECT revoke_reason FROM sessions WHERE id = $1", uuid.UUID(session_id)
    )
    return reason


# --- RevokeSession --------------------------------------------------------


async def test_revoke_own_other_session_succeeds(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)

    response = await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=other.session_id), metadata=bearer(caller.access_token)
    )

    assert response == pb.RevokeSessionResponse()


async def test_revoked_session_disappears_from_list_sessions(stub: Stub) -> None:
    caller, other, kept = await sign_in(stub, 3)

    await revoke(stub, caller, other.session_id)

    assert await listed_ids(stub, caller.access_token) == {caller.session_id, kept.session_id}


async def test_revoked_session_refresh_token_is_refused_as_revoked(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)

    await revoke(stub, caller, other.session_id)

    assert await refresh_failure(stub, other.refresh_token) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_REVOKED",
    )


async def test_revoked_session_access_token_validates_inactive_as_revoked(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)

    await revoke(stub, caller, other.session_id)

    assert await validation(stub, other.access_token) == (False, "SESSION_REVOKED")


async def test_revoking_another_session_keeps_the_callers_session_working(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)

    await revoke(stub, caller, other.session_id)

    assert await still_works(stub, caller)


async def test_revoke_session_of_another_user_is_session_not_found(stub: Stub) -> None:
    (alice,) = await sign_in(stub, 1)
    (bob,) = await sign_in(stub, 1, email=BOB)

    code, reason, _ = await revoke_error(stub, alice, bob.session_id)

    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


async def test_failed_revoke_of_another_users_session_leaves_it_working(stub: Stub) -> None:
    (alice,) = await sign_in(stub, 1)
    (bob,) = await sign_in(stub, 1, email=BOB)

    with pytest.raises(grpc.aio.AioRpcError):
        await revoke(stub, alice, bob.session_id)

    assert await still_works(stub, bob)


async def test_revoke_unknown_session_is_session_not_found(stub: Stub) -> None:
    (alice,) = await sign_in(stub, 1)

    code, reason, _ = await revoke_error(stub, alice, str(uuid.uuid4()))

    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


async def test_revoke_session_with_malformed_id_names_the_field(stub: Stub) -> None:
    (alice,) = await sign_in(stub, 1)

    code, reason, metadata = await revoke_error(stub, alice, "not-a-uuid")

    assert (code, reason, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "session_id"},
    )


async def test_revoking_an_already_revoked_session_succeeds(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)
    await revoke(stub, caller, other.session_id)

    await revoke(stub, caller, other.session_id)

    assert await refusal(stub, other) == REVOKED


async def test_revoking_again_keeps_the_first_revoke_note(stub: Stub, pool: Pool) -> None:
    caller, other = await sign_in(stub, 2)
    await revoke(stub, caller, other.session_id, note="first")

    await revoke(stub, caller, other.session_id, note="second")

    reason = await revoke_reason_of(pool, other.session_id)
    assert reason is not None
    assert "first" in reason
    assert "second" not in reason


async def test_revoke_session_stores_the_note_with_the_session(stub: Stub, pool: Pool) -> None:
    caller, other = await sign_in(stub, 2)

    await revoke(stub, caller, other.session_id, note="lost my phone")

    reason = await revoke_reason_of(pool, other.session_id)
    assert reason is not None
    assert "lost my phone" in reason


async def test_revoke_session_without_credentials_is_missing_credentials(stub: Stub) -> None:
    _, other = await sign_in(stub, 2)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RevokeSession(pb.RevokeSessionRequest(session_id=other.session_id))

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


# --- Logout ---------------------------------------------------------------


async def test_logout_default_scope_revokes_only_the_callers_session(stub: Stub) -> None:
    caller, *others = await sign_in(stub, 3)

    count = await logout(stub, caller)

    assert count == 1
    assert await refusal(stub, caller) == REVOKED
    for other in others:
        assert await still_works(stub, other)


async def test_logout_this_session_scope_revokes_only_the_callers_session(stub: Stub) -> None:
    caller, *others = await sign_in(stub, 3)

    count = await logout(stub, caller, pb.LOGOUT_SCOPE_THIS_SESSION)

    assert count == 1
    assert await refusal(stub, caller) == REVOKED
    for other in others:
        assert await still_works(stub, other)


async def test_logout_other_sessions_revokes_all_but_the_callers(stub: Stub) -> None:
    caller, *others = await sign_in(stub, 4)

    count = await logout(stub, caller, pb.LOGOUT_SCOPE_OTHER_SESSIONS)

    assert count == 3
    for other in others:
        assert await refusal(stub, other) == REVOKED
    assert await listed_ids(stub, caller.access_token) == {caller.session_id}
    assert await still_works(stub, caller)


async def test_logout_all_sessions_revokes_every_session_including_the_callers(
    stub: Stub,
) -> None:
    sessions = await sign_in(stub, 4)

    count = await logout(stub, sessions[1], pb.LOGOUT_SCOPE_ALL_SESSIONS)

    assert count == 4
    for session in sessions:
        assert await refusal(stub, session) == REVOKED


async def test_logout_counts_only_sessions_it_revoked(stub: Stub) -> None:
    caller, revoked, _live = await sign_in(stub, 3)
    await revoke(stub, caller, revoked.session_id)

    count = await logout(stub, caller, pb.LOGOUT_SCOPE_ALL_SESSIONS)

    assert count == 2


async def test_logout_with_only_the_refresh_token_revokes_that_session(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)

    response = await stub.Logout(pb.LogoutRequest(refresh_token=caller.refresh_token))

    assert response.revoked_session_count == 1
    assert await refusal(stub, caller) == REVOKED
    assert await still_works(stub, other)


async def test_logout_with_the_refresh_token_of_the_grace_window_revokes_the_session(
    stub: Stub, clock: FrozenClock
) -> None:
    (session,) = await sign_in(stub, 1)
    await refresh(stub, session.refresh_token)
    clock.advance(timedelta(seconds=5))

    response = await stub.Logout(pb.LogoutRequest(refresh_token=session.refresh_token))

    assert response.revoked_session_count == 1
    assert await validation(stub, session.access_token) == (False, "SESSION_REVOKED")


async def test_logout_with_a_refresh_token_rotated_past_the_grace_window_is_reuse(
    stub: Stub, clock: FrozenClock
) -> None:
    (session,) = await sign_in(stub, 1)
    await refresh(stub, session.refresh_token)
    clock.advance(timedelta(seconds=11))  # refresh_grace_period defaults to 10s

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Logout(pb.LogoutRequest(refresh_token=session.refresh_token))

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")


async def test_logout_with_a_refresh_token_rotated_exactly_the_grace_period_ago_logs_out(
    stub: Stub, clock: FrozenClock
) -> None:
    # Logout draws the grace edge where Refresh does: at rotation + grace, no reuse yet.
    (session,) = await sign_in(stub, 1)
    rotated = await refresh(stub, session.refresh_token)
    clock.advance(timedelta(seconds=10))  # exactly refresh_grace_period

    response = await stub.Logout(pb.LogoutRequest(refresh_token=session.refresh_token))

    assert response.revoked_session_count == 1
    assert await refusal(stub, rotated) == REVOKED


async def test_logout_with_a_reused_refresh_token_revokes_the_session(
    stub: Stub, clock: FrozenClock
) -> None:
    (session,) = await sign_in(stub, 1)
    rotated = await refresh(stub, session.refresh_token)
    clock.advance(timedelta(seconds=11))

    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Logout(pb.LogoutRequest(refresh_token=session.refresh_token))

    assert await refusal(stub, rotated) == REVOKED


async def test_logout_without_any_credentials_is_missing_credentials(stub: Stub) -> None:
    await sign_in(stub, 1)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Logout(pb.LogoutRequest())

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


async def test_second_logout_with_the_same_access_token_is_session_revoked(stub: Stub) -> None:
    (session,) = await sign_in(stub, 1)
    await logout(stub, session)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await logout(stub, session)

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


@pytest.mark.parametrize(
    "scope",
    [pb.LOGOUT_SCOPE_THIS_SESSION, pb.LOGOUT_SCOPE_OTHER_SESSIONS, pb.LOGOUT_SCOPE_ALL_SESSIONS],
    ids=["this-session", "other-sessions", "all-sessions"],
)
async def test_logout_does_not_touch_another_users_sessions(
    stub: Stub, scope: pb.LogoutScope.ValueType
) -> None:
    alice = await sign_in(stub, 2)
    bob = await sign_in(stub, 2, email=BOB)

    await logout(stub, alice[0], scope)

    assert await listed_ids(stub, bob[0].access_token) == {s.session_id for s in bob}
    for session in bob:
        assert await still_works(stub, session)


async def test_logout_with_an_unknown_scope_names_the_field(stub: Stub) -> None:
    (session,) = await sign_in(stub, 1)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await logout(stub, session, pb.LogoutScope.ValueType(99))

    code, reason, metadata = error_info(caught.value)
    assert (code, reason, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "scope"},
    )
