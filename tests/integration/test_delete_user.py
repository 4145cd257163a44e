"""DeleteUser on a real server and database: the sessions end through the feed, the
account's personal data is gone, the ids the audit trail needs stay, and the email is
free again. Also the one update the audit trail takes since migration 0016."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest

from authsvc.core.models import SessionEndReason
from authsvc.domain.throttle import account_bucket, escalated_account_bucket
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import AdminLaunched
from tests.helpers import PASSWORD, bearer, error_info, login, register, sign_in, validate

pytestmark = pytest.mark.asyncio

EMAIL = "alice@example.com"
DISPLAY_NAME = "Alice Liddell"


async def delete(admin_server: AdminLaunched, user_id: str, reason: str = "ticket 42") -> int:
    response = await admin_server.admin.DeleteUser(
        admin_pb.DeleteUserRequest(user_id=user_id, reason=reason),
        metadata=admin_server.as_operator,
    )
    return int(response.revoked_session_count)


async def delete_failure(
    admin_server: AdminLaunched, user_id: str, reason: str = "ticket 42"
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await delete(admin_server, user_id, reason)
    code, reason_, _ = error_info(caught.value)
    return code, reason_


async def test_deleting_ends_every_session_through_the_feed_as_user_deleted(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    sessions = await sign_in(admin_server.stub, 2)
    (other,) = await sign_in(admin_server.stub, 1, email="bob@example.com")

    count = await delete(admin_server, sessions[0].user_id)

    assert count == 2
    logged = await PgRevocationLog(pool).read_after(0, limit=100)
    assert sorted((str(e.session_id), str(e.user_id), e.reason) for e in logged) == sorted(
        (s.session_id, s.user_id, SessionEndReason.USER_DELETED) for s in sessions
    )
    for session in sessions:
        assert not (await validate(admin_server.stub, session.access_token)).active
    assert (await validate(admin_server.stub, other.access_token)).active


async def test_deleting_erases_the_personal_data_and_keeps_the_ids(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    stub = admin_server.stub
    first = await register(stub, display_name=DISPLAY_NAME, device_name="Alice's phone")
    second = await login(stub)
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=second.session_id, reason="my stolen phone"),
        metadata=bearer(first.access_token),
    )
    user_id = uuid.UUID(first.user_id)
    events_before = await pool.fetch(
        "SELECT id, event, session_id FROM audit_events WHERE user_id = $1 ORDER BY id", user_id
    )

    await delete(admin_server, first.user_id)

    for table in ("users", "user_emails", "sessions", "refresh_tokens", "password_reset_tokens"):
        rows = await pool.fetch(f"SELECT * FROM {table}")
        assert rows == [], table
    events = await pool.fetch(
        "SELECT id, event, session_id, ip_address, user_agent, detail FROM audit_events"
        " WHERE user_id = $1 ORDER BY id",
        user_id,
    )
    kept = [(e["id"], e["event"], e["session_id"]) for e in events]
    assert kept[: len(events_before)] == [tuple(e) for e in events_before]
    user_events = [e for e in events if not e["event"].startswith("admin_")]
    assert user_events
    assert {(e["ip_address"], e["user_agent"]) for e in user_events} == {("", "")}
    assert all("note" not in e["detail"] for e in user_events)
    (deleted,) = [e for e in events if e["event"] == "admin_user_deleted"]
    assert deleted["detail"]["operator"] == "oncall"
    assert deleted["detail"]["reason"] == "ticket 42"
    assert deleted["ip_address"] == "127.0.0.1"
    dump = str([dict(r) for r in await pool.fetch("SELECT * FROM audit_events")])
    for personal in (EMAIL, DISPLAY_NAME, "Alice's phone", "my stolen phone"):
        assert personal not in dump


async def test_deleting_drops_the_login_throttle_rows_keyed_by_the_email(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await login(admin_server.stub, password="not the password")
    buckets = [account_bucket(EMAIL), escalated_account_bucket(EMAIL)]
    known = await pool.fetchval("SELECT count(*) FROM login_known_addresses")
    assert (await pool.fetchval("SELECT count(*) FROM login_failures")) > 0
    assert known == 1

    await delete(admin_server, session.user_id)

    remaining = await pool.fetch("SELECT bucket FROM login_failures")
    assert not {row["bucket"] for row in remaining} & set(buckets)
    assert all(not row["bucket"].startswith("pair:") for row in remaining)
    assert await pool.fetchval("SELECT count(*) FROM login_known_addresses") == 0


async def test_the_email_registers_again_as_a_new_account(admin_server: AdminLaunched) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await delete(admin_server, session.user_id)

    again = await register(admin_server.stub, password="another passphrase")

    assert again.user_id != session.user_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(admin_server.stub, password=PASSWORD)
    assert error_info(caught.value)[1] == "INVALID_CREDENTIALS"


async def test_deleting_removes_the_users_reset_tokens_and_no_others(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await register(admin_server.stub, email="bob@example.com")
    issued = {}
    for email in (EMAIL, "bob@example.com"):
        response = await admin_server.admin.CreatePasswordResetToken(
            admin_pb.CreatePasswordResetTokenRequest(email=email), metadata=admin_server.as_operator
        )
        issued[email] = response.reset_token
    bob = await pool.fetchval("SELECT id FROM users WHERE email = 'bob@example.com'")

    await delete(admin_server, session.user_id)

    kept = await pool.fetch("SELECT user_id FROM password_reset_tokens")
    assert [row["user_id"] for row in kept] == [bob]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_server.stub.ResetPassword(
            pb.ResetPasswordRequest(reset_token=issued[EMAIL], new_password="a new passphrase")
        )
    assert error_info(caught.value)[1] == "PASSWORD_RESET_TOKEN_INVALID"


async def test_get_user_after_deletion_is_user_not_found(admin_server: AdminLaunched) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await delete(admin_server, session.user_id)

    for request in (
        admin_pb.GetUserRequest(user_id=session.user_id),
        admin_pb.GetUserRequest(email=EMAIL),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin_server.admin.GetUser(request, metadata=admin_server.as_operator)
        assert error_info(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_deleting_a_deleted_or_unknown_user_is_user_not_found(
    admin_server: AdminLaunched,
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await delete(admin_server, session.user_id)

    assert await delete_failure(admin_server, session.user_id) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert await delete_failure(admin_server, str(uuid.uuid4())) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )


async def test_deleting_needs_a_reason(admin_server: AdminLaunched) -> None:
    (session,) = await sign_in(admin_server.stub, 1)

    assert await delete_failure(admin_server, session.user_id, reason=" ") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    assert (await validate(admin_server.stub, session.access_token)).active


async def test_a_failure_midway_leaves_the_account_and_its_sessions_as_they_were(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    sessions = await sign_in(admin_server.stub, 2)
    # A real failure after the sessions are ended, at the account row's delete. Citus
    # refuses creating or dropping a trigger on a distributed table unless told to (it
    # then propagates it to the shards); on plain PostgreSQL the citus.* setting is an
    # inert placeholder.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
        await conn.execute(
            "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no deleting today'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse_delete BEFORE DELETE ON users"
            " FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
        )
    try:
        assert (await delete_failure(admin_server, sessions[0].user_id))[0] == (
            grpc.StatusCode.INTERNAL
        )
    finally:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
            await conn.execute("DROP TRIGGER refuse_delete ON users")
        await pool.execute("DROP FUNCTION refuse_delete()")

    for session in sessions:
        assert (await validate(admin_server.stub, session.access_token)).active
    assert await PgRevocationLog(pool).read_after(0, limit=100) == []
    assert await pool.fetchval("SELECT count(*) FROM users") == 1
    await login(admin_server.stub)
    assert await delete(admin_server, sessions[0].user_id) == 3


@pytest.mark.parametrize(
    "change",
    [
        "event = 'nothing happened'",
        "ip_address = '198.51.100.1'",
        "detail = detail || '{\"forged\": true}'",
        "occurred_at = occurred_at - interval '1 day'",
        "session_id = gen_random_uuid()",
    ],
)
async def test_a_deleted_users_events_take_only_the_erasure(
    admin_server: AdminLaunched, pool: Pool, change: str
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    await delete(admin_server, session.user_id)
    before = await pool.fetch("SELECT * FROM audit_events ORDER BY id")

    with pytest.raises(asyncpg.RaiseError):
        await pool.execute(
            f"UPDATE audit_events SET {change} WHERE user_id = $1",
            uuid.UUID(session.user_id),
        )

    assert await pool.fetch("SELECT * FROM audit_events ORDER BY id") == before


async def test_a_live_users_events_cannot_be_erased(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    (session,) = await sign_in(admin_server.stub, 1)
    before = await pool.fetch("SELECT * FROM audit_events ORDER BY id")

    with pytest.raises(asyncpg.RaiseError):
        await pool.execute(
            "UPDATE audit_events SET ip_address = '', user_agent = '', detail = '{}'"
            " WHERE user_id = $1",
            uuid.UUID(session.user_id),
        )

    assert await pool.fetch("SELECT * FROM audit_events ORDER BY id") == before
