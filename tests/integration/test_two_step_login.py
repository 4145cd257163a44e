"""Two-step login on a real server: a user with a TOTP factor gets a pending login from
Login, and only CompleteLogin with a right code makes it a session, at AAL2."""

from __future__ import annotations

from datetime import timedelta

import grpc
import jwt
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, refresh, register, validate
from tests.integration.second_factor_helpers import (
    Enrolled,
    complete_with_code,
    enrol_totp,
    next_code,
    proof,
)

pytestmark = pytest.mark.asyncio

PENDING_LOGIN_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "PENDING_LOGIN_INVALID")
SECOND_FACTOR_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "SECOND_FACTOR_INVALID")


@pytest.fixture
async def enrolled(stub: Stub, clock: FrozenClock) -> Enrolled:
    signed_in = await register(stub)
    return await enrol_totp(stub, signed_in.access_token, clock)


async def complete(stub: Stub, pending: str, code: str) -> pb.CompleteLoginResponse:
    answer: pb.CompleteLoginResponse = await stub.CompleteLogin(
        pb.CompleteLoginRequest(pending_login_token=pending, proof=proof(code))
    )
    return answer


async def refused(stub: Stub, pending: str, code: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete(stub, pending, code)
    return error_info(caught.value)[:2]


async def test_login_of_a_totp_user_is_pending_until_a_right_code_completes_it_at_aal2(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock, pool: Pool
) -> None:
    sessions_before = await pool.fetchval("SELECT count(*) FROM sessions")

    answer = await login(stub, device_name="Work laptop")

    assert answer.access_token == answer.refresh_token == ""
    step = answer.second_factor
    assert not step.enrolment_required
    assert set(step.factor_types) == {
        factors_pb.FACTOR_TYPE_TOTP,
        factors_pb.FACTOR_TYPE_RECOVERY_CODE,
    }
    assert await pool.fetchval("SELECT count(*) FROM sessions") == sessions_before

    session = await complete(stub, step.pending_login_token, next_code(enrolled, clock))

    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    assert (claims["acr"], claims["amr"]) == ("aal2", ["pwd", "otp", "mfa"])
    validated = await validate(stub, session.access_token)
    assert (validated.active, validated.assurance_level) == (True, factors_pb.ASSURANCE_LEVEL_AAL2)
    listed: pb.GetSessionResponse = await stub.GetSession(
        pb.GetSessionRequest(session_id=session.session_id), metadata=bearer(session.access_token)
    )
    assert listed.session.device_name == "Work laptop"
    assert [(m.method, m.factor_type) for m in listed.session.authentication_methods] == [
        ("pwd", factors_pb.FACTOR_TYPE_UNSPECIFIED),
        ("otp", factors_pb.FACTOR_TYPE_TOTP),
    ]
    # Refresh keeps the level.
    refreshed = await refresh(stub, session.refresh_token)
    assert jwt.decode(refreshed.access_token, options={"verify_signature": False})["acr"] == "aal2"


async def test_a_pending_login_is_single_use(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    pending = (await login(stub)).second_factor.pending_login_token
    await complete(stub, pending, next_code(enrolled, clock))

    assert await refused(stub, pending, next_code(enrolled, clock)) == PENDING_LOGIN_INVALID


async def test_wrong_codes_are_refused_and_the_fifth_ends_the_pending_login(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    pending = (await login(stub)).second_factor.pending_login_token

    for _ in range(5):
        assert await refused(stub, pending, "000000") in (
            SECOND_FACTOR_INVALID,
            (grpc.StatusCode.UNAUTHENTICATED, "PENDING_LOGIN_INVALID"),
        )

    assert await refused(stub, pending, next_code(enrolled, clock)) == PENDING_LOGIN_INVALID


async def test_a_pending_login_expires(stub: Stub, enrolled: Enrolled, clock: FrozenClock) -> None:
    pending = (await login(stub)).second_factor.pending_login_token
    clock.advance(timedelta(minutes=5))

    assert await refused(stub, pending, next_code(enrolled, clock)) == PENDING_LOGIN_INVALID


async def test_a_password_changed_while_a_login_waits_refuses_its_second_step(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    pending = (await login(stub)).second_factor.pending_login_token
    await stub.ChangePassword(
        pb.ChangePasswordRequest(
            current_password=PASSWORD,
            new_password="an entirely new passphrase",
        ),
        metadata=bearer(enrolled.access_token),
    )

    assert await refused(stub, pending, next_code(enrolled, clock)) == PENDING_LOGIN_INVALID


async def test_a_recovery_code_completes_a_login_once(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    code = enrolled.recovery_codes[0]
    pending = (await login(stub)).second_factor.pending_login_token
    session = await stub.CompleteLogin(
        pb.CompleteLoginRequest(
            pending_login_token=pending, proof=factors_pb.FactorProof(recovery_code=code)
        )
    )
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    assert claims["acr"] == "aal2"

    again = (await login(stub)).second_factor.pending_login_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CompleteLogin(
            pb.CompleteLoginRequest(
                pending_login_token=again, proof=factors_pb.FactorProof(recovery_code=code)
            )
        )
    assert error_info(caught.value)[:2] == SECOND_FACTOR_INVALID


async def test_the_code_used_to_complete_a_login_cannot_complete_another(
    stub: Stub, enrolled: Enrolled, clock: FrozenClock
) -> None:
    code = next_code(enrolled, clock)
    await complete_with_code(stub, code)

    pending = (await login(stub)).second_factor.pending_login_token
    assert await refused(stub, pending, code) == SECOND_FACTOR_INVALID
