"""No second-factor secret reaches the logs: the TOTP secret and its URI, the codes, the
recovery codes and the pending login token, through enrolment, a two-step login, a step-up,
and wrong codes."""

from __future__ import annotations

import logging

import grpc
import pyotp
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.log_format import JsonFormatter
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.helpers import Stub, bearer, login, register
from tests.integration.second_factor_helpers import Enrolled, next_code, proof

pytestmark = pytest.mark.asyncio


async def test_logs_never_contain_a_second_factor_secret(
    stub: Stub, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    signed_in = await register(stub)
    begun: pb.EnrolTotpResponse = await stub.EnrolTotp(
        pb.EnrolTotpRequest(), metadata=bearer(signed_in.access_token)
    )
    totp = pyotp.TOTP(begun.secret)
    first_code = totp.at(clock.now())
    confirmed: pb.ConfirmTotpResponse = await stub.ConfirmTotp(
        pb.ConfirmTotpRequest(factor_id=begun.factor_id, code=first_code),
        metadata=bearer(signed_in.access_token),
    )
    pending = (await login(stub)).second_factor.pending_login_token
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CompleteLogin(
            pb.CompleteLoginRequest(pending_login_token=pending, proof=proof("999999"))
        )
    session = await stub.CompleteLogin(
        pb.CompleteLoginRequest(
            pending_login_token=pending,
            proof=factors_pb.FactorProof(recovery_code=confirmed.recovery_codes[0]),
        )
    )
    step_code = next_code(Enrolled(totp, list(confirmed.recovery_codes), ""), clock)
    await stub.StepUp(
        pb.StepUpRequest(proof=proof(step_code)), metadata=bearer(session.access_token)
    )

    forbidden = {
        "secret": begun.secret,
        "provisioning uri": begun.provisioning_uri,
        # Six digits turn up inside timestamps: a code is looked for as a whole value.
        "first code": f'"{first_code}"',
        "step-up code": f'"{step_code}"',
        "wrong code": '"999999"',
        "pending login token": pending,
        **{f"recovery code {i}": code for i, code in enumerate(confirmed.recovery_codes)},
    }
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records] + [r.getMessage() for r in caplog.records]
    assert sum(getattr(r, "event", None) == "rpc" for r in caplog.records) >= 7
    leaks = [(name, line) for line in lines for name, secret in forbidden.items() if secret in line]
    assert leaks == []
