"""Helpers for the second-factor tests: enrol a TOTP app on a real server and compute its
codes as an authenticator app would, at the server's FrozenClock time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import pyotp
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.helpers import Stub, bearer, error_info, login

STEP = timedelta(seconds=30)
SECOND_FACTOR_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "SECOND_FACTOR_INVALID")
SESSION_REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
STEP_UP_REQUIRED = (grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED")
RATE_LIMITED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
FACTOR_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "FACTOR_NOT_FOUND")
INVALID_FIELD = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
# How a session a change of the user's factors ended refuses its access token.
ENDED_BY_FACTOR_CHANGE = (
    grpc.StatusCode.UNAUTHENTICATED,
    "SESSION_REVOKED",
    "SESSION_END_REASON_SECOND_FACTOR_CHANGED",
)


def code_at(secret: str, clock: FrozenClock, steps: int = 0) -> str:
    """What the user's app shows `steps` time steps from the server's now."""
    return pyotp.TOTP(secret).at(clock.now() + steps * STEP)


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    """(code, reason) of a call that must fail; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code, reason, _ = error_info(caught.value)
    return code, reason


async def enrol_totp(stub: Stub, access_token: str, name: str = "Phone") -> pb.EnrolTotpResponse:
    response: pb.EnrolTotpResponse = await stub.EnrolTotp(
        pb.EnrolTotpRequest(name=name), metadata=bearer(access_token)
    )
    return response


async def confirm_totp(
    stub: Stub, access_token: str, factor_id: str, code: str
) -> pb.ConfirmTotpResponse:
    response: pb.ConfirmTotpResponse = await stub.ConfirmTotp(
        pb.ConfirmTotpRequest(factor_id=factor_id, code=code), metadata=bearer(access_token)
    )
    return response


@dataclass(frozen=True, slots=True)
class Enrolled:
    """A user with a confirmed TOTP, and the session that enrolled it (now stepped up)."""

    user_id: str
    session_id: str
    # The enrolling session's access token after ConfirmTotp (at AAL2).
    access_token: str
    refresh_token: str
    secret: str
    factor_id: str
    recovery_codes: list[str]


async def enrol_and_confirm(stub: Stub, clock: FrozenClock, session: Any) -> Enrolled:
    """Enrol a TOTP app in `session` (a fresh sign-in: no step-up needed) and confirm it
    with the app's current code."""
    enrolment = await enrol_totp(stub, session.access_token)
    confirmed = await confirm_totp(
        stub, session.access_token, enrolment.factor_id, code_at(enrolment.secret, clock)
    )
    return Enrolled(
        user_id=session.user_id,
        session_id=session.session_id,
        access_token=confirmed.signed_in.access_token,
        refresh_token=session.refresh_token,
        secret=enrolment.secret,
        factor_id=enrolment.factor_id,
        recovery_codes=list(confirmed.recovery_codes),
    )


async def step_up(
    stub: Stub, access_token: str, proof: factors_pb.FactorProof
) -> pb.StepUpResponse:
    response: pb.StepUpResponse = await stub.StepUp(
        pb.StepUpRequest(proof=proof), metadata=bearer(access_token)
    )
    return response


def totp_proof(code: str) -> factors_pb.FactorProof:
    return factors_pb.FactorProof(totp_code=code)


def recovery_proof(code: str) -> factors_pb.FactorProof:
    return factors_pb.FactorProof(recovery_code=code)


async def sign_in_with_totp(
    stub: Stub, secret: str, clock: FrozenClock, email: str = "alice@example.com"
) -> pb.CompleteLoginResponse:
    """A new session of a user with TOTP: the password, then the app's code. Moves the
    clock one step first, so the code is not one an earlier call used."""
    clock.advance(STEP)
    first = await login(stub, email=email)
    response: pb.CompleteLoginResponse = await stub.CompleteLogin(
        pb.CompleteLoginRequest(
            pending_login_token=first.second_factor.pending_login_token,
            proof=totp_proof(code_at(secret, clock)),
        )
    )
    return response


async def factors_of(stub: Stub, access_token: str) -> pb.ListFactorsResponse:
    response: pb.ListFactorsResponse = await stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(access_token)
    )
    return response


async def ended_by_factor_change(stub: Stub, access_token: str) -> tuple[Any, ...]:
    """How a call with an ended session's access token is refused: (code, reason,
    end_reason)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(access_token))
    code, reason, metadata = error_info(caught.value)
    return code, reason, metadata.get("end_reason")
