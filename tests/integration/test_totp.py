"""TOTP on a real server and database: enrolment shows the secret once and keeps it sealed,
a first valid code confirms it, each code works once within a one-step skew window, wrong
codes are throttled like wrong passwords, and every change ends the user's other sessions."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.factors import (
    ENDED_BY_FACTOR_CHANGE,
    FACTOR_NOT_FOUND,
    INVALID_FIELD,
    RATE_LIMITED,
    SECOND_FACTOR_INVALID,
    STEP,
    STEP_UP_REQUIRED,
    code_at,
    confirm_totp,
    ended_by_factor_change,
    enrol_and_confirm,
    enrol_totp,
    factors_of,
    refusal,
    sign_in_with_totp,
    step_up,
    totp_proof,
)
from tests.helpers import Stub, bearer, refresh, register, sign_in

pytestmark = pytest.mark.asyncio


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


# --- enrolment ---------------------------------------------------------------


async def test_enrolment_answers_the_secret_and_a_uri_for_the_users_email(
    stub: Stub, clock: FrozenClock
) -> None:
    session = await register(stub)

    enrolment = await enrol_totp(stub, session.access_token)

    uri = urlsplit(enrolment.provisioning_uri)
    query = parse_qs(uri.query)
    assert (uri.scheme, uri.netloc, unquote(uri.path)) == (
        "otpauth",
        "totp",
        "/authsvc:alice@example.com",
    )
    assert (query["secret"], query["issuer"], query["digits"], query["period"]) == (
        [enrolment.secret],
        ["authsvc"],
        ["6"],
        ["30"],
    )
    assert len(base64.b32decode(enrolment.secret)) == 20
    assert (
        enrolment.expires_at.ToDatetime().timestamp()
        == (clock.now() + timedelta(minutes=10)).timestamp()
    )


async def test_an_unconfirmed_enrolment_is_not_a_factor(stub: Stub) -> None:
    session = await register(stub)

    await enrol_totp(stub, session.access_token)

    listed = await factors_of(stub, session.access_token)
    assert (list(listed.factors), listed.recovery_codes_remaining) == ([], 0)


async def test_the_secret_is_sealed_at_rest(stub: Stub, pool: Pool) -> None:
    session = await register(stub)
    enrolment = await enrol_totp(stub, session.access_token)

    row = await pool.fetchrow(
        "SELECT * FROM user_factors WHERE id = $1", uuid.UUID(enrolment.factor_id)
    )

    assert row is not None
    stored = b"".join(
        value if isinstance(value, bytes) else str(value).encode() for value in row.values()
    )
    assert enrolment.secret.encode() not in stored
    assert base64.b32decode(enrolment.secret) not in stored
    assert row["totp_kek_id"] == "test-1"


async def test_the_apps_code_confirms_the_first_factor_with_ten_recovery_codes(
    stub: Stub, clock: FrozenClock
) -> None:
    session = await register(stub)
    enrolment = await enrol_totp(stub, session.access_token, name="Phone")

    confirmed = await confirm_totp(
        stub, session.access_token, enrolment.factor_id, code_at(enrolment.secret, clock)
    )

    assert (confirmed.factor.factor_id, confirmed.factor.type, confirmed.factor.name) == (
        enrolment.factor_id,
        factors_pb.FACTOR_TYPE_TOTP,
        "Phone",
    )
    assert len(set(confirmed.recovery_codes)) == 10
    assert (confirmed.signed_in.session_id, confirmed.signed_in.refresh_token) == (
        session.session_id,
        "",
    )
    listed = await factors_of(stub, confirmed.signed_in.access_token)
    assert [(f.factor_id, f.type) for f in listed.factors] == [
        (enrolment.factor_id, factors_pb.FACTOR_TYPE_TOTP)
    ]
    assert listed.recovery_codes_remaining == 10


async def test_confirming_raises_the_session_to_aal2(stub: Stub, clock: FrozenClock) -> None:
    session = await register(stub)

    enrolled = await enrol_and_confirm(stub, clock, session)

    validated = await stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=enrolled.access_token)
    )
    assert validated.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


async def test_a_wrong_code_does_not_confirm_the_enrolment(stub: Stub, clock: FrozenClock) -> None:
    session = await register(stub)
    enrolment = await enrol_totp(stub, session.access_token)

    refused = await refusal(
        confirm_totp(
            stub, session.access_token, enrolment.factor_id, wrong(code_at(enrolment.secret, clock))
        )
    )

    assert refused == SECOND_FACTOR_INVALID
    assert list((await factors_of(stub, session.access_token)).factors) == []


async def test_an_enrolment_past_ten_minutes_cannot_be_confirmed(
    stub: Stub, clock: FrozenClock
) -> None:
    session = await register(stub)
    enrolment = await enrol_totp(stub, session.access_token)
    clock.advance(timedelta(minutes=10))

    refused = await refusal(
        confirm_totp(
            stub, session.access_token, enrolment.factor_id, code_at(enrolment.secret, clock)
        )
    )

    assert refused == FACTOR_NOT_FOUND


async def test_a_user_with_a_totp_cannot_enrol_another(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))

    refused = await refusal(enrol_totp(stub, enrolled.access_token))

    assert refused == (grpc.StatusCode.ALREADY_EXISTS, "FACTOR_ALREADY_ENROLLED")


async def test_confirm_refuses_a_malformed_id_or_code(stub: Stub, clock: FrozenClock) -> None:
    session = await register(stub)
    enrolment = await enrol_totp(stub, session.access_token)
    code = code_at(enrolment.secret, clock)

    refused = [
        await refusal(confirm_totp(stub, session.access_token, "not-a-uuid", code)),
        await refusal(confirm_totp(stub, session.access_token, enrolment.factor_id, code[:5])),
        await refusal(confirm_totp(stub, session.access_token, enrolment.factor_id, "12345a")),
    ]

    assert refused == [INVALID_FIELD] * 3


async def test_confirming_ends_the_users_other_sessions(
    stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    caller, *others = await sign_in(stub, 3)

    enrolled = await enrol_and_confirm(stub, clock, caller)

    for other in others:
        assert await ended_by_factor_change(stub, other.access_token) == ENDED_BY_FACTOR_CHANGE
    assert len((await factors_of(stub, enrolled.access_token)).factors) == 1
    row = await pool.fetchrow(
        "SELECT session_id, detail FROM audit_events WHERE event = 'factor_enrolled'"
    )
    assert row is not None
    assert (str(row["session_id"]), row["detail"]["factor_type"]) == (caller.session_id, "totp")
    assert row["detail"]["revoked_session_count"] == 2


# --- enrolling needs a recent sign-in --------------------------------------------


async def test_enrolling_in_a_session_signed_in_long_ago_needs_a_step_up(
    stub: Stub, clock: FrozenClock
) -> None:
    session = await register(stub)
    clock.advance(timedelta(minutes=11))
    renewed = await refresh(stub, session.refresh_token)

    refused = await refusal(enrol_totp(stub, renewed.access_token))

    assert refused == STEP_UP_REQUIRED


# --- verification: replay, skew, throttling ---------------------------------------


async def test_a_code_once_used_is_refused_and_the_next_steps_code_accepted(
    stub: Stub, clock: FrozenClock
) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    used = code_at(enrolled.secret, clock)

    replayed = await refusal(step_up(stub, enrolled.access_token, totp_proof(used)))
    clock.advance(STEP)
    stepped = await step_up(
        stub, enrolled.access_token, totp_proof(code_at(enrolled.secret, clock))
    )

    assert replayed == SECOND_FACTOR_INVALID
    assert stepped.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


async def test_codes_one_step_behind_or_ahead_are_accepted(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    clock.advance(5 * STEP)

    behind = await step_up(
        stub, enrolled.access_token, totp_proof(code_at(enrolled.secret, clock, -1))
    )
    ahead = await step_up(
        stub, enrolled.access_token, totp_proof(code_at(enrolled.secret, clock, 1))
    )

    assert [behind.assurance_level, ahead.assurance_level] == [factors_pb.ASSURANCE_LEVEL_AAL2] * 2


async def test_codes_two_steps_away_are_refused(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    clock.advance(5 * STEP)
    inside = {code_at(enrolled.secret, clock, steps) for steps in (-1, 0, 1)}
    outside = [code_at(enrolled.secret, clock, steps) for steps in (-2, 2)]
    # A code two steps away equals one inside the window once in a few hundred thousand.
    assert inside.isdisjoint(outside)

    refused = [
        await refusal(step_up(stub, enrolled.access_token, totp_proof(code))) for code in outside
    ]

    assert refused == [SECOND_FACTOR_INVALID] * 2


async def test_wrong_codes_are_throttled_like_failed_logins(stub: Stub, clock: FrozenClock) -> None:
    # The default limit per account and address is 5 failures, as for passwords.
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    clock.advance(STEP)
    right = code_at(enrolled.secret, clock)
    for _ in range(5):
        assert (
            await refusal(step_up(stub, enrolled.access_token, totp_proof(wrong(right))))
            == SECOND_FACTOR_INVALID
        )

    refused = await refusal(step_up(stub, enrolled.access_token, totp_proof(right)))

    assert refused == RATE_LIMITED


async def test_verifications_are_audited(stub: Stub, clock: FrozenClock, pool: Pool) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    clock.advance(STEP)
    right = code_at(enrolled.secret, clock)
    await refusal(step_up(stub, enrolled.access_token, totp_proof(wrong(right))))

    await step_up(stub, enrolled.access_token, totp_proof(right))

    rows = await pool.fetch(
        "SELECT event, detail FROM audit_events"
        " WHERE event IN ('second_factor_failed', 'second_factor_verified') ORDER BY id"
    )
    assert [(row["event"], row["detail"]["factor_type"]) for row in rows] == [
        ("second_factor_failed", "totp"),
        ("second_factor_verified", "totp"),
    ]


# --- removal -------------------------------------------------------------------


async def test_removing_the_factor_ends_other_sessions_and_drops_the_recovery_codes(
    stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    other = await sign_in_with_totp(stub, enrolled.secret, clock)

    removed = await stub.RemoveFactor(
        pb.RemoveFactorRequest(factor_id=enrolled.factor_id), metadata=bearer(enrolled.access_token)
    )

    assert removed.revoked_session_count == 1
    assert await ended_by_factor_change(stub, other.access_token) == ENDED_BY_FACTOR_CHANGE
    listed = await factors_of(stub, enrolled.access_token)
    assert (list(listed.factors), listed.recovery_codes_remaining) == ([], 0)
    assert await pool.fetchval("SELECT count(*) FROM recovery_codes") == 0
    row = await pool.fetchrow("SELECT detail FROM audit_events WHERE event = 'factor_removed'")
    assert row is not None
    assert (row["detail"]["factor_id"], row["detail"]["revoked_session_count"]) == (
        enrolled.factor_id,
        1,
    )


async def test_removing_a_factor_needs_a_recent_step_up(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    clock.advance(timedelta(minutes=11))
    renewed = await refresh(stub, enrolled.refresh_token)

    refused = await refusal(
        stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=enrolled.factor_id),
            metadata=bearer(renewed.access_token),
        )
    )

    assert refused == STEP_UP_REQUIRED
    assert len((await factors_of(stub, renewed.access_token)).factors) == 1


async def test_removing_an_unknown_factor_is_factor_not_found(
    stub: Stub, clock: FrozenClock
) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))

    refused = await refusal(
        stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=str(uuid.uuid4())),
            metadata=bearer(enrolled.access_token),
        )
    )

    assert refused == FACTOR_NOT_FOUND


async def test_another_users_factor_cannot_be_removed(stub: Stub, clock: FrozenClock) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    mallory = await register(stub, email="mallory@example.com")

    refused = await refusal(
        stub.RemoveFactor(
            pb.RemoveFactorRequest(factor_id=enrolled.factor_id),
            metadata=bearer(mallory.access_token),
        )
    )

    assert refused == FACTOR_NOT_FOUND
    assert len((await factors_of(stub, enrolled.access_token)).factors) == 1


# --- the sweeper -----------------------------------------------------------------


async def test_the_sweeper_deletes_expired_enrolments_and_keeps_factors(
    stub: Stub, server: AuthServer, clock: FrozenClock, pool: Pool
) -> None:
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    pending = await enrol_totp(stub, (await register(stub, email="bob@example.com")).access_token)
    clock.advance(timedelta(minutes=10))

    counts = await server.sweeper.run_once()

    assert counts is not None
    assert counts["factor_enrolments"] == 1
    remaining = await pool.fetch("SELECT id FROM user_factors")
    assert {str(row["id"]) for row in remaining} == {enrolled.factor_id}
    assert pending.factor_id != enrolled.factor_id
