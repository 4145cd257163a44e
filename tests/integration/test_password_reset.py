"""Password resets on a real server: an operator's CreatePasswordResetToken, then the
user's ResetPassword, which sets the password once per token and ends every session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio

from authsvc.core.clock import FrozenClock
from authsvc.core.models import SessionEndReason
from authsvc.service_keys import mint_service_key
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch, Launched
from tests.helpers import (
    PASSWORD,
    AdminStub,
    Stub,
    backends_waiting_for_locks,
    bearer,
    error_info,
    login,
    refresh_failure,
    sign_in,
)
from tests.processes import eventually, started

pytestmark = pytest.mark.asyncio

NEW_PASSWORD = "a brand new passphrase"
INVALID = (grpc.StatusCode.UNAUTHENTICATED, "PASSWORD_RESET_TOKEN_INVALID")


@dataclass(frozen=True, slots=True)
class Admin:
    launched: Launched
    admin: AdminStub
    as_operator: tuple[tuple[str, str]]

    @property
    def stub(self) -> Stub:
        return self.launched.stub

    async def token_for(self, **user: str) -> admin_pb.CreatePasswordResetTokenResponse:
        response: admin_pb.CreatePasswordResetTokenResponse = (
            await self.admin.CreatePasswordResetToken(
                admin_pb.CreatePasswordResetTokenRequest(**user), metadata=self.as_operator
            )
        )
        return response

    async def reset(self, token: str, new_password: str = NEW_PASSWORD) -> int:
        response = await self.stub.ResetPassword(
            pb.ResetPasswordRequest(reset_token=token, new_password=new_password)
        )
        return int(response.revoked_session_count)

    async def reset_failure(
        self, token: str, new_password: str = NEW_PASSWORD
    ) -> tuple[grpc.StatusCode, str, dict[str, str], str]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.reset(token, new_password)
        code, reason, metadata = error_info(caught.value)
        return code, reason, metadata, caught.value.details() or ""


class StartAdmin:
    def __init__(self, launch: Launch, channels: list[grpc.aio.Channel]) -> None:
        self._launch = launch
        self._channels = channels

    async def __call__(self, *, login_failures_per_ip: str = "50") -> Admin:
        key, entry = mint_service_key("oncall")
        launched = await self._launch(
            service_keys=entry, operators="oncall", login_failures_per_ip=login_failures_per_ip
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{launched.server.port}")
        self._channels.append(channel)
        return Admin(launched, admin_service_pb2_grpc.AdminServiceStub(channel), bearer(key))


@pytest_asyncio.fixture
async def start_admin(launch: Launch) -> AsyncIterator[StartAdmin]:
    channels: list[grpc.aio.Channel] = []
    yield StartAdmin(launch, channels)
    for channel in channels:
        await channel.close()


@pytest_asyncio.fixture
async def admin(start_admin: StartAdmin) -> Admin:
    return await start_admin()


async def test_a_reset_sets_the_new_password_and_ends_every_session_for_password_reset(
    admin: Admin, pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sessions = await sign_in(admin.stub, 2)
    (other,) = await sign_in(admin.stub, 1, email="bob@example.com")
    # Any spelling of the email with the same canonical form.
    issued = await admin.token_for(email="Alice@Example.COM")

    count = await admin.reset(issued.reset_token)

    assert count == 2
    assert issued.user_id == sessions[0].user_id
    await login(admin.stub, password=NEW_PASSWORD)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(admin.stub, password=PASSWORD)
    assert error_info(caught.value)[1] == "INVALID_CREDENTIALS"
    for session in sessions:
        assert await refresh_failure(admin.stub, session.refresh_token) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "SESSION_REVOKED",
        )
    logged = await PgRevocationLog(pool).read_after(0, limit=100)
    assert sorted((str(e.session_id), e.reason) for e in logged) == sorted(
        (s.session_id, SessionEndReason.PASSWORD_RESET) for s in sessions
    )
    await refreshes(admin.stub, other.refresh_token)
    assert issued.reset_token not in caplog.text


async def test_a_login_that_checked_the_old_password_before_a_reset_gets_no_session(
    admin: Admin, pool: Pool
) -> None:
    # The login passes the password check, then waits (on the known-address table its
    # success writes) while the reset commits; only then does it create its session.
    (session,) = await sign_in(admin.stub, 1)
    issued = await admin.token_for(user_id=session.user_id)
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE login_known_addresses IN EXCLUSIVE MODE")
        racing = started(login(admin.stub, password=PASSWORD))
        await eventually(lambda: _one_waiting(pool))

        assert await admin.reset(issued.reset_token) == 1

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await racing
    assert error_info(caught.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    live = await pool.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL",
        uuid.UUID(session.user_id),
    )
    assert live == 0


async def _one_waiting(pool: Pool) -> bool:
    return await backends_waiting_for_locks(pool) >= 1


async def refreshes(stub: Stub, refresh_token: str) -> None:
    """Another user's session is untouched: its refresh works."""
    await stub.Refresh(pb.RefreshRequest(refresh_token=refresh_token))


async def test_a_token_is_good_once(admin: Admin) -> None:
    await sign_in(admin.stub, 1)
    issued = await admin.token_for(email="alice@example.com")
    await admin.reset(issued.reset_token)

    code, reason, *_ = await admin.reset_failure(issued.reset_token, "yet another passphrase")

    assert (code, reason) == INVALID
    await login(admin.stub, password=NEW_PASSWORD)


async def test_using_one_token_spends_the_users_other_tokens(admin: Admin) -> None:
    (session,) = await sign_in(admin.stub, 1)
    first = await admin.token_for(user_id=session.user_id)
    second = await admin.token_for(user_id=session.user_id)
    await admin.reset(second.reset_token)

    code, reason, *_ = await admin.reset_failure(first.reset_token, "yet another passphrase")

    assert (code, reason) == INVALID


async def test_a_token_past_its_ttl_is_refused(admin: Admin, clock: FrozenClock) -> None:
    await sign_in(admin.stub, 1)
    issued = await admin.token_for(email="alice@example.com")
    assert issued.expires_at.ToDatetime(tzinfo=clock.now().tzinfo) == clock.now() + timedelta(
        hours=1
    )
    clock.advance(timedelta(hours=1))

    code, reason, *_ = await admin.reset_failure(issued.reset_token)

    assert (code, reason) == INVALID
    await login(admin.stub, password=PASSWORD)


async def test_the_sweeper_deletes_expired_tokens(
    admin: Admin, clock: FrozenClock, pool: Pool
) -> None:
    await sign_in(admin.stub, 1)
    await admin.token_for(email="alice@example.com")
    clock.advance(timedelta(hours=1))
    await admin.token_for(email="alice@example.com")

    counts = await admin.launched.server.sweeper.run_once()

    assert counts is not None
    assert counts["password_reset_tokens"] == 1
    assert await pool.fetchval("SELECT count(*) FROM password_reset_tokens") == 1


async def test_concurrent_resets_with_one_token_change_the_password_once(
    admin: Admin, pool: Pool
) -> None:
    (session,) = await sign_in(admin.stub, 1)
    issued = await admin.token_for(email="alice@example.com")
    passwords = [f"concurrent passphrase {n}" for n in range(4)]
    # Every reset finds the token good, then queues on the account's row lock, which
    # this holds until all of them wait: they are all in flight at once.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", uuid.UUID(session.user_id)
        )
        resets = [
            asyncio.create_task(admin.reset(issued.reset_token, password)) for password in passwords
        ]

        async def all_waiting() -> bool:
            return await backends_waiting_for_locks(pool) == len(passwords)

        await eventually(all_waiting)
    outcomes = await asyncio.gather(*resets, return_exceptions=True)

    won = [p for p, outcome in zip(passwords, outcomes, strict=True) if outcome == 1]
    lost = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert [error_info(e)[:2] for e in lost] == [INVALID] * (len(passwords) - 1)
    await login(admin.stub, password=won[0])


async def test_unknown_spent_and_expired_tokens_get_the_same_answer(
    admin: Admin, clock: FrozenClock
) -> None:
    await sign_in(admin.stub, 1)
    spent = await admin.token_for(email="alice@example.com")
    await admin.reset(spent.reset_token)
    expired = await admin.token_for(email="alice@example.com")
    clock.advance(timedelta(hours=2))

    answers = [
        await admin.reset_failure(token)
        for token in (spent.reset_token, expired.reset_token, "x" * 43, "not even a token")
    ]

    assert answers == [(*INVALID, {}, answers[0][3])] * 4


async def test_a_weak_new_password_changes_nothing_and_leaves_the_token_good(
    admin: Admin,
) -> None:
    await sign_in(admin.stub, 1)
    issued = await admin.token_for(email="alice@example.com")

    code, reason, metadata, _ = await admin.reset_failure(issued.reset_token, "short")

    assert (code, reason, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "WEAK_PASSWORD",
        {"field": "new_password"},
    )
    await login(admin.stub, password=PASSWORD)
    assert await admin.reset(issued.reset_token) == 2


async def test_invalid_tokens_count_against_the_address_like_failed_logins(
    start_admin: StartAdmin,
) -> None:
    admin = await start_admin(login_failures_per_ip="3")
    await sign_in(admin.stub, 1)
    issued = await admin.token_for(email="alice@example.com")
    for _ in range(3):
        await admin.reset_failure(uuid.uuid4().hex)

    code, reason, *_ = await admin.reset_failure(issued.reset_token)

    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    await login(admin.stub, password=PASSWORD)


async def test_a_disabled_users_token_is_refused_and_none_is_issued(admin: Admin) -> None:
    (session,) = await sign_in(admin.stub, 1)
    issued = await admin.token_for(user_id=session.user_id)
    await admin.admin.DisableUser(
        admin_pb.DisableUserRequest(user_id=session.user_id, reason="test"),
        metadata=admin.as_operator,
    )

    code, reason, *_ = await admin.reset_failure(issued.reset_token)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.token_for(user_id=session.user_id)

    assert (code, reason) == INVALID
    assert error_info(caught.value)[:2] == (grpc.StatusCode.PERMISSION_DENIED, "USER_DISABLED")


async def test_a_token_for_no_such_user_is_user_not_found(admin: Admin) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as by_id:
        await admin.token_for(user_id=str(uuid.uuid4()))
    with pytest.raises(grpc.aio.AioRpcError) as by_email:
        await admin.token_for(email="nobody@example.com")

    assert error_info(by_id.value)[:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert error_info(by_email.value)[:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_a_token_issued_while_the_account_is_deleted_is_user_not_found_and_not_kept(
    admin: Admin, pool: Pool
) -> None:
    (session,) = await sign_in(admin.stub, 1)
    user_id = uuid.UUID(session.user_id)
    # As DeleteUser does: the account's row lock first, then the row deleted. The token's
    # issuing waits for the lock, since no foreign key orders it after the deletion.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
        issuing = asyncio.create_task(admin.token_for(user_id=session.user_id))

        async def waiting() -> bool:
            return await backends_waiting_for_locks(pool) == 1

        await eventually(waiting)
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await issuing

    assert error_info(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert await pool.fetchval("SELECT count(*) FROM password_reset_tokens") == 0


async def test_issuing_a_token_is_audited_with_the_operator_and_no_token(
    admin: Admin, pool: Pool
) -> None:
    (session,) = await sign_in(admin.stub, 1)

    issued = await admin.token_for(user_id=session.user_id)

    row = await pool.fetchrow(
        "SELECT user_id, detail FROM audit_events"
        " WHERE event = 'admin_password_reset_token_created'"
    )
    assert row is not None
    assert str(row["user_id"]) == session.user_id
    assert row["detail"]["operator"] == "oncall"
    dump = str([dict(r) for r in await pool.fetch("SELECT * FROM audit_events")])
    assert issued.reset_token not in dump
