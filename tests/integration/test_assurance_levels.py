"""A session's assurance level on a real server: a password alone is AAL1 in the access
token (`acr`, `amr`, `auth_time`), in ValidateToken and in ListSessions, and Refresh keeps
it; an account that must have a second factor gets a pending login and nothing else."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.conftest import Launch
from tests.helpers import (
    PASSWORD,
    Stub,
    bearer,
    error_info,
    login,
    refresh,
    refresh_failure,
    register,
    validate,
)

pytestmark = pytest.mark.asyncio

EMAIL = "alice@example.com"


def claims_of(access_token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return claims


async def test_a_password_session_is_aal1_in_its_token_validate_token_and_listing(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)

    claims = claims_of(signed_in.access_token)
    assert (claims["acr"], claims["amr"]) == ("aal1", ["pwd"])
    assert claims["auth_time"] == int(clock.now().timestamp())
    validated = await validate(stub, signed_in.access_token)
    assert (validated.active, validated.assurance_level, list(validated.amr)) == (
        True,
        factors_pb.ASSURANCE_LEVEL_AAL1,
        ["pwd"],
    )
    listed: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(), metadata=bearer(signed_in.access_token)
    )
    [session] = listed.sessions
    assert session.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL1
    [method] = session.authentication_methods
    assert (method.method, method.factor_type) == ("pwd", factors_pb.FACTOR_TYPE_UNSPECIFIED)
    assert method.verified_at.ToDatetime().timestamp() == clock.now().timestamp()


async def test_refresh_keeps_the_level_and_the_time_of_the_sign_in(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    signed_in_at = int(clock.now().timestamp())
    clock.advance(timedelta(minutes=3))

    refreshed = await refresh(stub, signed_in.refresh_token)

    claims = claims_of(refreshed.access_token)
    assert (claims["acr"], claims["amr"], claims["auth_time"]) == ("aal1", ["pwd"], signed_in_at)
    assert claims["iat"] == signed_in_at + 180


async def test_get_session_shows_the_level(stub: Stub) -> None:
    signed_in = await register(stub)

    answer: pb.GetSessionResponse = await stub.GetSession(
        pb.GetSessionRequest(session_id=signed_in.session_id),
        metadata=bearer(signed_in.access_token),
    )

    assert answer.session.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL1
    assert [m.method for m in answer.session.authentication_methods] == ["pwd"]


async def pending_enrolment(stub: Stub) -> factors_pb.SecondFactorStep:
    answer = await login(stub)
    assert (answer.access_token, answer.refresh_token, answer.session_id) == ("", "", "")
    assert answer.second_factor.enrolment_required
    assert list(answer.second_factor.factor_types) == []
    return answer.second_factor


async def test_with_every_account_required_to_enrol_a_password_login_gets_no_session(
    launch: Launch, pool: Pool, clock: FrozenClock
) -> None:
    stub = (await launch(second_factor_policy="all")).stub
    await stub.Register(pb.RegisterRequest(email=EMAIL, password=PASSWORD))

    step = await pending_enrolment(stub)

    assert (
        step.expires_at.ToDatetime().timestamp() == (clock.now() + timedelta(minutes=5)).timestamp()
    )
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0
    # The pending token is only a pending token: neither an access nor a refresh token.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(step.pending_login_token))
    assert error_info(caught.value)[1] == "TOKEN_INVALID"
    assert await refresh_failure(stub, step.pending_login_token) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
    # And an account that must enrol cannot complete the login with a code instead.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CompleteLogin(
            pb.CompleteLoginRequest(
                pending_login_token=step.pending_login_token,
                proof=factors_pb.FactorProof(totp_code="123456"),
            )
        )
    assert error_info(caught.value)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "PENDING_LOGIN_INVALID",
    )
    # Stored hashed: the token itself is nowhere in the table.
    stored = await pool.fetchval("SELECT token_hash FROM pending_logins")
    assert step.pending_login_token.encode() not in bytes(stored)


async def test_an_account_an_operator_marks_must_enrol_and_the_others_sign_in(
    stub: Stub, pool: Pool
) -> None:
    await register(stub)
    await register(stub, email="bob@example.com")
    await pool.execute("UPDATE users SET second_factor_required = true WHERE email = $1", EMAIL)

    await pending_enrolment(stub)
    assert (await login(stub, email="bob@example.com")).access_token


async def test_register_that_signs_in_sends_a_new_account_to_enrolment_when_all_must_enrol(
    launch: Launch, pool: Pool
) -> None:
    stub = (await launch(second_factor_policy="all", registration_reveals_accounts="true")).stub

    answer: pb.RegisterResponse = await stub.Register(
        pb.RegisterRequest(email=EMAIL, password=PASSWORD)
    )

    assert answer.access_token == ""
    assert answer.second_factor.enrolment_required
    assert answer.second_factor.pending_login_token
    assert await pool.fetchval("SELECT count(*) FROM users") == 1
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0


@pytest.mark.parametrize(
    "proof",
    [
        factors_pb.FactorProof(),
        factors_pb.FactorProof(totp_code=""),
        factors_pb.FactorProof(totp_code="1" * 65),
        factors_pb.FactorProof(passkey=factors_pb.PasskeyAssertion(challenge_id="nope")),
    ],
)
async def test_complete_login_refuses_a_malformed_proof_before_anything_else(
    stub: Stub, proof: factors_pb.FactorProof
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CompleteLogin(pb.CompleteLoginRequest(pending_login_token="x", proof=proof))

    code, reason, metadata = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
    assert metadata["field"].startswith("proof")


async def test_complete_login_with_an_unknown_pending_token_is_pending_login_invalid(
    stub: Stub,
) -> None:
    signed_in = await register(stub)

    for token in ("", signed_in.refresh_token, "x" * 66):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CompleteLogin(
                pb.CompleteLoginRequest(
                    pending_login_token=token, proof=factors_pb.FactorProof(totp_code="123456")
                )
            )
        expected = "INVALID_FIELD" if token == "" else "PENDING_LOGIN_INVALID"
        assert error_info(caught.value)[1] == expected
