"""ChangePassword on a real server: it takes the current password, checked and throttled
as Login checks one, ends every other session of the account (PASSWORD_CHANGED) and keeps
the caller's."""

from __future__ import annotations

import grpc
import pytest

from authsvc.core.models import SessionEndReason
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import (
    PASSWORD,
    Stub,
    Tokens,
    bearer,
    error_info,
    listed_ids,
    login,
    refresh,
    refresh_failure,
    sign_in,
)

pytestmark = pytest.mark.asyncio

NEW_PASSWORD = "a new and longer passphrase"
WRONG = "not the password"
RATE_LIMITED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
INVALID_CREDENTIALS = (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


async def change_password(
    stub: Stub, caller: Tokens, current: str = PASSWORD, new: str = NEW_PASSWORD
) -> pb.ChangePasswordResponse:
    response: pb.ChangePasswordResponse = await stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=current, new_password=new),
        metadata=bearer(caller.access_token),
    )
    return response


async def change_refused(
    stub: Stub, caller: Tokens, current: str = PASSWORD, new: str = NEW_PASSWORD
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await change_password(stub, caller, current, new)
    return error_info(caught.value)


async def login_refused(stub: Stub, password: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(stub, password=password)
    code, reason, _ = error_info(caught.value)
    return code, reason


async def test_changing_the_password_ends_the_other_sessions_and_keeps_this_one(
    stub: Stub, pool: Pool
) -> None:
    caller, *others = await sign_in(stub, 3)

    response = await change_password(stub, caller)

    assert response.revoked_session_count == 2
    assert await listed_ids(stub, caller.access_token) == {caller.session_id}
    assert (await refresh(stub, caller.refresh_token)).session_id == caller.session_id
    for other in others:
        assert await refresh_failure(stub, other.refresh_token) == REVOKED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await listed_ids(stub, other.access_token)
        assert error_info(caught.value)[:2] == REVOKED
    logged = await PgRevocationLog(pool).read_after(0, limit=100)
    assert sorted((str(e.session_id), e.reason) for e in logged) == sorted(
        (other.session_id, SessionEndReason.PASSWORD_CHANGED) for other in others
    )


async def test_after_a_change_the_old_password_is_refused_and_the_new_one_signs_in(
    stub: Stub,
) -> None:
    (caller,) = await sign_in(stub, 1)

    await change_password(stub, caller)

    assert await login_refused(stub, PASSWORD) == INVALID_CREDENTIALS
    assert (await login(stub, password=NEW_PASSWORD)).user_id == caller.user_id


async def test_a_wrong_current_password_is_refused_and_changes_nothing(stub: Stub) -> None:
    caller, other = await sign_in(stub, 2)

    refused = await change_refused(stub, caller, current=WRONG)

    assert refused[:2] == INVALID_CREDENTIALS
    assert await listed_ids(stub, caller.access_token) == {caller.session_id, other.session_id}
    assert (await login(stub)).user_id == caller.user_id


async def test_wrong_current_passwords_are_throttled_like_logins(stub: Stub) -> None:
    # The default limit per account and address is 5 failures: ChangePassword's count
    # toward Login's, and the lock holds for both, even with the right password.
    (caller,) = await sign_in(stub, 1)
    for _ in range(5):
        assert (await change_refused(stub, caller, current=WRONG))[:2] == INVALID_CREDENTIALS

    assert (await change_refused(stub, caller))[:2] == RATE_LIMITED
    assert await login_refused(stub, PASSWORD) == RATE_LIMITED


async def test_failed_logins_throttle_the_password_change_too(stub: Stub) -> None:
    (caller,) = await sign_in(stub, 1)
    for _ in range(5):
        assert await login_refused(stub, WRONG) == INVALID_CREDENTIALS

    assert (await change_refused(stub, caller))[:2] == RATE_LIMITED


@pytest.mark.parametrize(
    "weak",
    ["short", "alice@example.com", "aaaaaaaaaaaa", ""],
    ids=["too short", "the email", "one character", "empty"],
)
async def test_a_weak_new_password_is_refused_and_changes_nothing(stub: Stub, weak: str) -> None:
    caller, other = await sign_in(stub, 2)

    code, reason, metadata = await change_refused(stub, caller, new=weak)

    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert reason == ("INVALID_FIELD" if not weak else "WEAK_PASSWORD")
    assert metadata["field"] == "new_password"
    assert await listed_ids(stub, caller.access_token) == {caller.session_id, other.session_id}
    assert (await login(stub)).user_id == caller.user_id


async def test_changing_the_password_needs_the_callers_access_token(stub: Stub) -> None:
    await sign_in(stub, 1)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ChangePassword(
            pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD)
        )

    assert error_info(caught.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")
    assert (await login(stub)).access_token


async def test_a_change_and_its_failures_are_audited(stub: Stub, pool: Pool) -> None:
    caller, other = await sign_in(stub, 2)
    await change_refused(stub, caller, current=WRONG)

    await change_password(stub, caller)

    rows = await pool.fetch(
        "SELECT event, user_id::text, session_id::text, detail FROM audit_events"
        " WHERE event LIKE 'password_change%' ORDER BY id"
    )
    assert [(r["event"], r["user_id"], r["session_id"]) for r in rows] == [
        ("password_change_failed", caller.user_id, caller.session_id),
        ("password_changed", caller.user_id, caller.session_id),
    ]
    assert rows[0]["detail"] == {"reason": "invalid_credentials"}
    assert rows[1]["detail"] == {
        "revoked_session_count": 1,
        "revoked_session_ids": [other.session_id],
    }
