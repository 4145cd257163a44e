"""Enrolling a TOTP app the way a user does, with codes computed by pyotp at the server's
clock, for the tests of two-step login and step-up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pyotp

from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.helpers import Stub, bearer, login

__all__ = ["TOTP_STEP", "Enrolled", "complete_with_code", "enrol_totp", "next_code", "proof"]

TOTP_STEP = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Enrolled:
    totp: pyotp.TOTP
    recovery_codes: list[str]
    # The session the enrolment was made in, at AAL2 now.
    access_token: str


async def enrol_totp(stub: Stub, access_token: str, clock: FrozenClock) -> Enrolled:
    """EnrolTotp then ConfirmTotp in the caller's session, with the code of this step."""
    begun: pb.EnrolTotpResponse = await stub.EnrolTotp(
        pb.EnrolTotpRequest(name="Phone"), metadata=bearer(access_token)
    )
    totp = pyotp.TOTP(begun.secret)
    confirmed: pb.ConfirmTotpResponse = await stub.ConfirmTotp(
        pb.ConfirmTotpRequest(factor_id=begun.factor_id, code=totp.at(clock.now())),
        metadata=bearer(access_token),
    )
    return Enrolled(
        totp=totp,
        recovery_codes=list(confirmed.recovery_codes),
        access_token=confirmed.signed_in.access_token,
    )


def next_code(enrolled: Enrolled, clock: FrozenClock) -> str:
    """A code never used yet: the clock moves on a step first (a code is good once)."""
    clock.advance(TOTP_STEP)
    return str(enrolled.totp.at(clock.now()))


def proof(code: str) -> factors_pb.FactorProof:
    return factors_pb.FactorProof(totp_code=code)


async def complete_with_code(stub: Stub, code: str) -> pb.CompleteLoginResponse:
    """A password login, then its second step with `code`."""
    pending = (await login(stub)).second_factor.pending_login_token
    assert pending
    answer: pb.CompleteLoginResponse = await stub.CompleteLogin(
        pb.CompleteLoginRequest(pending_login_token=pending, proof=proof(code))
    )
    return answer
