"""DisableUser and EnableUser on a real server and database: disabling ends every session
through the revocation feed (USER_DISABLED) and refuses Login, after the password only,
until EnableUser; a Login in flight never leaves a session behind."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest

from authsvc.core.models import SessionEndReason
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import OPERATOR, AdminLaunched
from tests.helpers import (
    PASSWORD,
    Stub,
    backends_waiting_for_locks,
    error_info,
    login,
    refresh,
    refresh_failure,
    sign_in,
)
from tests.processes import eventually, started

pytestmark = pytest.mark.asyncio

DISABLED = (grpc.StatusCode.PERMISSION_DENIED, "USER_DISABLED")
INVALID_CREDENTIALS = (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
UNKNOWN_USER = "00000000-0000-4000-8000-000000000000"


async def disable(
    admin_server: AdminLaunched, user_id: str, reason: str = "chargeback fraud"
) -> admin_pb.DisableUserResponse:
    response: admin_pb.DisableUserResponse = await admin_server.admin.DisableUser(
        admin_pb.DisableUserRequest(user_id=user_id, reason=reason),
        metadata=admin_server.as_operator,
    )
    return response


async def enable(admin_server: AdminLaunched, user_id: str) -> admin_pb.EnableUserResponse:
    response: admin_pb.EnableUserResponse = await admin_server.admin.EnableUser(
        admin_pb.EnableUserRequest(user_id=user_id), metadata=admin_server.as_operator
    )
    return response


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code, reason, _ = error_info(caught.value)
    return code, reason


async def login_refused(stub: Stub, password: str = PASSWORD) -> tuple[grpc.StatusCode, str]:
    return await failure(login(stub, password=password))


async def live_sessions(pool: Pool, user_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
        uuid.UUID(user_id),
    )
    return count


async def test_disabling_ends_every_session_of_the_user_through_the_feed(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    stub = admin_server.stub
    sessions = await sign_in(stub, 2)
    (bob,) = await sign_in(stub, 1, email="bob@example.com")

    answer = await disable(admin_server, sessions[0].user_id)

    logged = await PgRevocationLog(pool).read_after(0, limit=100)
    assert answer.revoked_session_count == 2
    assert sorted((str(e.session_id), e.reason) for e in logged) == sorted(
        (s.session_id, SessionEndReason.USER_DISABLED) for s in sessions
    )
    for session in sessions:
        assert await refresh_failure(stub, session.refresh_token) == REVOKED
        validated = await stub.ValidateToken(
            pb.ValidateTokenRequest(access_token=session.access_token)
        )
        assert (validated.active, validated.inactive_reason) == (False, "SESSION_REVOKED")
    assert (await refresh(stub, bob.refresh_token)).access_token


async def test_disable_answers_the_account_disabled_with_its_reason(
    admin_server: AdminLaunched,
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)

    user = (await disable(admin_server, session.user_id, "chargeback fraud")).user

    assert (user.user_id, user.disabled_reason, user.live_session_count) == (
        session.user_id,
        "chargeback fraud",
        0,
    )
    assert user.HasField("disabled_at")
    assert user.updated_at == user.disabled_at


async def test_a_disabled_user_is_told_so_only_after_the_right_password(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await disable(admin_server, session.user_id)

    right = await login_refused(admin_server.stub)
    wrong = await login_refused(admin_server.stub, "not the password")

    assert (right, wrong) == (DISABLED, INVALID_CREDENTIALS)
    assert await live_sessions(pool, session.user_id) == 0


async def test_wrong_passwords_on_a_disabled_account_are_throttled_as_any_login(
    admin_server: AdminLaunched,
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await disable(admin_server, session.user_id)
    for _ in range(5):
        assert await login_refused(admin_server.stub, "not the password") == INVALID_CREDENTIALS

    assert await login_refused(admin_server.stub) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
    )


async def test_enabling_lets_the_user_sign_in_again_with_the_same_password(
    admin_server: AdminLaunched,
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await disable(admin_server, session.user_id)

    user = (await enable(admin_server, session.user_id)).user

    assert (user.HasField("disabled_at"), user.disabled_reason) == (False, "")
    assert (await login(admin_server.stub)).user_id == session.user_id
    assert await refresh_failure(admin_server.stub, session.refresh_token) == REVOKED


async def test_disabling_twice_succeeds_and_keeps_the_first_disabling(
    admin_server: AdminLaunched,
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    first = await disable(admin_server, session.user_id, "first")

    again = await disable(admin_server, session.user_id, "second")

    assert again.revoked_session_count == 0
    assert (again.user.disabled_at, again.user.disabled_reason) == (first.user.disabled_at, "first")


async def test_enabling_an_enabled_user_succeeds_and_changes_nothing(
    admin_server: AdminLaunched,
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)

    user = (await enable(admin_server, session.user_id)).user

    assert (user.HasField("disabled_at"), user.live_session_count) == (False, 1)
    assert (await refresh(admin_server.stub, session.refresh_token)).access_token


async def test_disable_and_enable_of_an_unknown_user_are_user_not_found(
    admin_server: AdminLaunched,
) -> None:
    not_found = (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")

    assert await failure(disable(admin_server, UNKNOWN_USER)) == not_found
    assert await failure(enable(admin_server, UNKNOWN_USER)) == not_found


async def test_disabling_needs_a_reason(admin_server: AdminLaunched) -> None:
    (session,) = await sign_in(admin_server.stub, 1)

    refused = await failure(disable(admin_server, session.user_id, reason="  "))

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert (await refresh(admin_server.stub, session.refresh_token)).access_token


async def test_disable_enable_and_the_refused_login_are_audited(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    first, second = await sign_in(admin_server.stub, 2)
    await disable(admin_server, first.user_id, "chargeback fraud")
    await login_refused(admin_server.stub)
    await enable(admin_server, first.user_id)

    rows = await pool.fetch(
        "SELECT event, user_id::text, detail FROM audit_events"
        " WHERE event IN ('admin_user_disabled', 'admin_user_enabled', 'login_failed')"
        " ORDER BY id"
    )

    disabled, refused, enabled = rows
    assert [row["event"] for row in rows] == [
        "admin_user_disabled",
        "login_failed",
        "admin_user_enabled",
    ]
    assert {row["user_id"] for row in rows} == {first.user_id}
    assert disabled["detail"]["operator"] == OPERATOR
    assert disabled["detail"]["via"] == "service_key"
    assert disabled["detail"]["reason"] == "chargeback fraud"
    assert disabled["detail"]["revoked_session_count"] == 2
    assert sorted(disabled["detail"]["revoked_session_ids"]) == sorted(
        [first.session_id, second.session_id]
    )
    assert refused["detail"] == {"reason": "user_disabled"}
    assert enabled["detail"] == {"operator": OPERATOR, "via": "service_key"}


# --- a Login in flight ------------------------------------------------------------------


async def test_a_login_that_checked_the_password_before_the_disabling_gets_no_session(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    # The login passes the password check, then waits (on the known-address table its
    # success writes) while DisableUser commits; only then does it create its session.
    (session,) = await sign_in(admin_server.stub, 1)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE login_known_addresses IN EXCLUSIVE MODE")
        racing = started(login(admin_server.stub))
        await eventually(lambda: _waiting(pool, 1))

        answer = await disable(admin_server, session.user_id)

    assert await failure(racing) == DISABLED
    assert answer.revoked_session_count == 1
    assert await live_sessions(pool, session.user_id) == 0


async def test_a_login_whose_session_is_being_stored_when_disabling_starts_is_ended(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    # The login has inserted its session and waits (on the audit table) before it commits;
    # DisableUser must wait for it and end that session too, not read past it.
    (session,) = await sign_in(admin_server.stub, 1)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")
        racing = started(login(admin_server.stub))
        await eventually(lambda: _waiting(pool, 1))
        disabling = started(disable(admin_server, session.user_id))
        await eventually(lambda: _waiting(pool, 2))

    signed_in, answer = await asyncio.gather(racing, disabling)
    assert answer.revoked_session_count == 2
    assert await refresh_failure(admin_server.stub, signed_in.refresh_token) == REVOKED
    assert await live_sessions(pool, session.user_id) == 0


async def _waiting(pool: Pool, count: int) -> bool:
    return await backends_waiting_for_locks(pool) >= count
