"""Step-up on a real server: for a user with a second factor, ChangePassword and Logout of
other or all sessions need a factor verified in the calling session within the step-up
window (STEP_UP_REQUIRED otherwise, with the factor types), and StepUp raises the session
without starting a new one."""

from __future__ import annotations

from datetime import timedelta

import grpc
import jwt
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, refresh, register
from tests.integration.second_factor_helpers import Enrolled, enrol_totp, next_code, proof

pytestmark = pytest.mark.asyncio

WINDOW = timedelta(minutes=10)
STEP_UP_REQUIRED = (grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED")
BOTH_TYPES = "FACTOR_TYPE_RECOVERY_CODE,FACTOR_TYPE_TOTP"


@pytest.fixture
async def enrolled(stub: Stub, clock: FrozenClock) -> Enrolled:
    signed_in = await register(stub)
    return await enrol_totp(stub, signed_in.access_token, clock)


async def change_password(stub: Stub, access_token: str) -> pb.ChangePasswordResponse:
    answer: pb.ChangePasswordResponse = await stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password="a new long passphrase"),
        metadata=bearer(access_token),
    )
    return answer


async def step_up(stub: Stub, access_token: str, code: str) -> pb.StepUpResponse:
    answer: pb.StepUpResponse = await stub.StepUp(
        pb.StepUpRequest(proof=proof(code)), metadata=bearer(access_token)
    )
    return answer


async def test_change_password_needs_a_recent_factor_and_step_up_gives_it(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock, pool: Pool
) -> None:
    clock.advance(WINDOW + timedelta(seconds=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await change_password(stub, enrolled.access_token)
    code, reason, metadata = error_info(caught.value)
    assert (code, reason, metadata["factor_types"]) == (*STEP_UP_REQUIRED, BOTH_TYPES)
    sessions = await pool.fetchval("SELECT count(*) FROM sessions")

    stepped = await step_up(stub, enrolled.access_token, next_code(enrolled, clock))

    assert stepped.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2
    assert stepped.step_up_expires_at.ToDatetime().timestamp() == (clock.now() + WINDOW).timestamp()
    # The same session, no new one; its new token says AAL2.
    assert await pool.fetchval("SELECT count(*) FROM sessions") == sessions
    old = jwt.decode(enrolled.access_token, options={"verify_signature": False})
    new = jwt.decode(stepped.access_token, options={"verify_signature": False})
    assert (new["sid"], new["acr"]) == (old["sid"], "aal2")
    await change_password(stub, stepped.access_token)


async def test_a_session_that_signed_in_with_a_password_alone_must_step_up(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock, pool: Pool
) -> None:
    # A session from before the factor: AAL1, never stepped up.
    await pool.execute("UPDATE sessions SET aal = 1, auth_methods = '{}', auth_method_times = '{}'")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Logout(
            pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_OTHER_SESSIONS),
            metadata=bearer(enrolled.access_token),
        )
    assert error_info(caught.value)[:2] == STEP_UP_REQUIRED

    stepped = await step_up(stub, enrolled.access_token, next_code(enrolled, clock))
    answer = await stub.Logout(
        pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_OTHER_SESSIONS),
        metadata=bearer(stepped.access_token),
    )
    assert answer.revoked_session_count == 0


@pytest.mark.parametrize("scope", [pb.LOGOUT_SCOPE_OTHER_SESSIONS, pb.LOGOUT_SCOPE_ALL_SESSIONS])
async def test_logging_out_others_with_a_stale_session_is_refused_and_ends_nothing(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock, pool: Pool, scope: pb.LogoutScope.ValueType
) -> None:
    clock.advance(WINDOW + timedelta(seconds=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Logout(pb.LogoutRequest(scope=scope), metadata=bearer(enrolled.access_token))

    assert error_info(caught.value)[:2] == STEP_UP_REQUIRED
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL") == 0


async def test_logout_with_a_refresh_token_is_gated_too(
    stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    signed_in = await register(stub)
    await enrol_totp(stub, signed_in.access_token, clock)
    clock.advance(WINDOW + timedelta(seconds=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Logout(
            pb.LogoutRequest(
                scope=pb.LOGOUT_SCOPE_ALL_SESSIONS, refresh_token=signed_in.refresh_token
            )
        )

    assert error_info(caught.value)[:2] == STEP_UP_REQUIRED
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL") == 0


async def test_this_session_logs_out_without_a_step_up(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    clock.advance(WINDOW + timedelta(seconds=1))

    answer = await stub.Logout(pb.LogoutRequest(), metadata=bearer(enrolled.access_token))

    assert answer.revoked_session_count == 1


async def test_a_user_without_a_factor_changes_the_password_as_before(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    clock.advance(timedelta(days=1))
    fresh = await refresh(stub, signed_in.refresh_token)

    assert (await change_password(stub, fresh.access_token)).revoked_session_count == 0


async def test_a_wrong_step_up_code_changes_nothing(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    clock.advance(WINDOW + timedelta(seconds=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await step_up(stub, enrolled.access_token, "000000")
    assert error_info(caught.value)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "SECOND_FACTOR_INVALID",
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await change_password(stub, enrolled.access_token)
    assert error_info(caught.value)[:2] == STEP_UP_REQUIRED


async def test_a_recovery_code_steps_up_and_a_stepped_up_session_refreshes_at_aal2(
    stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    signed_in = await register(stub)
    enrolled = await enrol_totp(stub, signed_in.access_token, clock)
    await pool.execute("UPDATE sessions SET aal = 1, auth_methods = '{}', auth_method_times = '{}'")

    stepped: pb.StepUpResponse = await stub.StepUp(
        pb.StepUpRequest(proof=factors_pb.FactorProof(recovery_code=enrolled.recovery_codes[0])),
        metadata=bearer(signed_in.access_token),
    )

    refreshed = await refresh(stub, signed_in.refresh_token)
    claims = jwt.decode(refreshed.access_token, options={"verify_signature": False})
    assert (claims["acr"], claims["amr"]) == ("aal2", ["pwd", "otp", "mfa"])
    assert stepped.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


async def test_step_up_needs_the_callers_access_token(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StepUp(pb.StepUpRequest(proof=proof("123456")))

    assert error_info(caught.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


async def test_a_login_of_a_user_with_a_factor_cannot_skip_to_a_session(
    stub: Stub, enrolled: Enrolled
) -> None:
    answer = await login(stub)

    assert answer.access_token == ""
    assert answer.second_factor.pending_login_token
