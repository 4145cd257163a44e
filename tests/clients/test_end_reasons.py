"""The Python client tells its session-ended callback why and when the session ended,
from the ErrorInfo metadata of the refusal, against the live server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from authsvc_client import AuthClient, SessionEndReason, SessionExpired, SessionRevoked

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, bearer, login

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
NEW_PASSWORD = "a brand new passphrase"


async def test_a_password_change_on_another_device_reaches_the_callback_as_its_reason(
    server: AuthServer, clock: FrozenClock, stub: Stub
) -> None:
    told: list[SessionExpired] = []
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, on_session_expired=told.append
    ) as client:
        await client.register(EMAIL, PASSWORD)
        other = await login(stub, email=EMAIL)
        await stub.ChangePassword(
            pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
            metadata=bearer(other.access_token),
        )

        with pytest.raises(SessionRevoked):
            await client.list_sessions()

    [ended] = told
    assert (ended.reason, ended.end_reason, ended.ended_at) == (
        "SESSION_REVOKED",
        SessionEndReason.PASSWORD_CHANGED,
        clock.now(),
    )


async def test_an_idle_timeout_reaches_the_callback_as_its_reason_and_deadline(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(session_idle_timeout="1h")
    told: list[SessionExpired] = []
    async with AuthClient.connect(
        f"127.0.0.1:{launched.server.port}", now=clock.now, on_session_expired=told.append
    ) as client:
        pair = await client.register(EMAIL, PASSWORD)
        clock.advance(timedelta(hours=2))

        with pytest.raises(SessionExpired):
            await client.list_sessions()

    [ended] = told
    assert (ended.reason, ended.end_reason, ended.ended_at) == (
        "SESSION_EXPIRED",
        SessionEndReason.IDLE_TIMEOUT,
        pair.refresh_token_expires_at,
    )


async def test_validate_token_tells_why_and_when_a_session_ended(
    server: AuthServer, clock: FrozenClock, stub: Stub
) -> None:
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as client:
        pair = await client.register(EMAIL, PASSWORD)
        await stub.Logout(pb.LogoutRequest(), metadata=bearer(pair.access_token))

        answer = await client.validate_token(pair.access_token)

    assert (answer.is_active, answer.end_reason, answer.ended_at) == (
        False,
        SessionEndReason.USER_LOGOUT,
        clock.now(),
    )
