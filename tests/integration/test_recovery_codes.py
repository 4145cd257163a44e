"""Recovery codes on a real server and database: issued with the first factor, each good
once, typed in any case with or without dashes, stored only as SHA-256, and replaced as a
set by RegenerateRecoveryCodes (which needs a step-up and ends the other sessions)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.factors import (
    ENDED_BY_FACTOR_CHANGE,
    FACTOR_NOT_FOUND,
    SECOND_FACTOR_INVALID,
    STEP_UP_REQUIRED,
    Enrolled,
    ended_by_factor_change,
    enrol_and_confirm,
    factors_of,
    recovery_proof,
    refusal,
    sign_in_with_totp,
    step_up,
)
from tests.helpers import Stub, bearer, login, refresh, register

pytestmark = pytest.mark.asyncio


async def regenerate(stub: Stub, access_token: str) -> pb.RegenerateRecoveryCodesResponse:
    response: pb.RegenerateRecoveryCodesResponse = await stub.RegenerateRecoveryCodes(
        pb.RegenerateRecoveryCodesRequest(), metadata=bearer(access_token)
    )
    return response


async def enrolled_user(stub: Stub, clock: FrozenClock) -> Enrolled:
    return await enrol_and_confirm(stub, clock, await register(stub))


async def test_a_recovery_code_works_once(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrolled_user(stub, clock)
    code = enrolled.recovery_codes[0]

    stepped = await step_up(stub, enrolled.access_token, recovery_proof(code))
    reused = await refusal(step_up(stub, enrolled.access_token, recovery_proof(code)))

    assert stepped.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2
    assert reused == SECOND_FACTOR_INVALID
    assert (await factors_of(stub, enrolled.access_token)).recovery_codes_remaining == 9


async def test_a_code_may_be_typed_in_capitals_without_dashes(
    stub: Stub, clock: FrozenClock
) -> None:
    enrolled = await enrolled_user(stub, clock)
    typed = enrolled.recovery_codes[3].replace("-", "").upper()

    stepped = await step_up(stub, enrolled.access_token, recovery_proof(typed))

    assert stepped.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


async def test_a_made_up_code_is_refused(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrolled_user(stub, clock)

    refused = await refusal(
        step_up(stub, enrolled.access_token, recovery_proof("aaaa-bbbb-cccc-dddd"))
    )

    assert refused == SECOND_FACTOR_INVALID
    assert (await factors_of(stub, enrolled.access_token)).recovery_codes_remaining == 10


async def test_codes_are_stored_as_sha256_only(stub: Stub, clock: FrozenClock, pool: Pool) -> None:
    enrolled = await enrolled_user(stub, clock)

    rows = await pool.fetch("SELECT code_hash FROM recovery_codes")

    normalised = [code.replace("-", "") for code in enrolled.recovery_codes]
    assert {bytes(row["code_hash"]) for row in rows} == {
        hashlib.sha256(code.encode()).digest() for code in normalised
    }
    stored = b"".join(bytes(row["code_hash"]) for row in rows)
    assert not any(code.encode() in stored for code in normalised)


async def test_regenerating_replaces_the_set(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrolled_user(stub, clock)

    regenerated = await regenerate(stub, enrolled.access_token)

    new = list(regenerated.recovery_codes)
    assert len(set(new)) == 10
    assert set(new).isdisjoint(enrolled.recovery_codes)
    old_refused = await refusal(
        step_up(stub, enrolled.access_token, recovery_proof(enrolled.recovery_codes[0]))
    )
    assert old_refused == SECOND_FACTOR_INVALID
    assert (await step_up(stub, enrolled.access_token, recovery_proof(new[0]))).assurance_level == (
        factors_pb.ASSURANCE_LEVEL_AAL2
    )


async def test_regenerating_ends_the_other_sessions_and_is_audited(
    stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    enrolled = await enrolled_user(stub, clock)
    other = await sign_in_with_totp(stub, enrolled.secret, clock)

    regenerated = await regenerate(stub, enrolled.access_token)

    assert regenerated.revoked_session_count == 1
    assert await ended_by_factor_change(stub, other.access_token) == ENDED_BY_FACTOR_CHANGE
    row = await pool.fetchrow(
        "SELECT session_id, detail FROM audit_events WHERE event = 'recovery_codes_regenerated'"
    )
    assert row is not None
    assert (str(row["session_id"]), row["detail"]["revoked_session_count"]) == (
        enrolled.session_id,
        1,
    )


async def test_regenerating_needs_a_recent_step_up(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrolled_user(stub, clock)
    clock.advance(timedelta(minutes=11))
    renewed = await refresh(stub, enrolled.refresh_token)

    refused = await refusal(regenerate(stub, renewed.access_token))

    assert refused == STEP_UP_REQUIRED
    still = await step_up(stub, renewed.access_token, recovery_proof(enrolled.recovery_codes[0]))
    assert still.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


async def test_a_user_without_a_factor_has_no_codes_to_regenerate(stub: Stub) -> None:
    session = await register(stub)

    refused = await refusal(regenerate(stub, session.access_token))

    assert refused == FACTOR_NOT_FOUND


async def test_a_recovery_code_completes_a_login(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrolled_user(stub, clock)
    first = await login(stub)

    completed = await stub.CompleteLogin(
        pb.CompleteLoginRequest(
            pending_login_token=first.second_factor.pending_login_token,
            proof=recovery_proof(enrolled.recovery_codes[1]),
        )
    )

    assert completed.user_id == enrolled.user_id
    assert (await factors_of(stub, completed.access_token)).recovery_codes_remaining == 9
