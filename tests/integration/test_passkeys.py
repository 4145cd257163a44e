"""Passkeys on a real server and PostgreSQL, with a software authenticator answering the
server's WebAuthn options as a browser would (tests/soft_authenticator.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable
from datetime import UTC, timedelta

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.core.errors import PasskeyChallengeInvalid, SecondFactorInvalid
from authsvc.core.factors import PasskeyAssertion
from authsvc.core.models import SessionEndReason, UserId
from authsvc.domain.passkeys import CHALLENGE_LIFETIME, MAX_CREDENTIAL_JSON
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.conftest import Launch, Launched
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, refresh_failure, register
from tests.soft_authenticator import SoftAuthenticator, unb64url

pytestmark = pytest.mark.asyncio

RP_ID = "login.example.com"
ORIGIN = "https://login.example.com"

CHALLENGE_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "PASSKEY_CHALLENGE_INVALID")
FACTOR_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "SECOND_FACTOR_INVALID")
INVALID_FIELD = (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")
REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")
RATE_LIMITED = (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def refused(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code, reason, _ = error_info(caught.value)
    return code, reason


async def add_passkey(
    stub: Stub, access_token: str, authenticator: SoftAuthenticator, name: str = "Laptop"
) -> pb.FinishPasskeyRegistrationResponse:
    begun = await stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(name=name), metadata=bearer(access_token)
    )
    finished: pb.FinishPasskeyRegistrationResponse = await stub.FinishPasskeyRegistration(
        pb.FinishPasskeyRegistrationRequest(
            challenge_id=begun.challenge_id,
            credential_json=authenticator.create(begun.options_json),
        ),
        metadata=bearer(access_token),
    )
    return finished


async def begin_login(stub: Stub) -> pb.BeginPasskeyAssertionResponse:
    begun: pb.BeginPasskeyAssertionResponse = await stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest()
    )
    return begun


def passkey_login(
    stub: Stub, challenge_id: str, credential_json: str
) -> Awaitable[pb.PasskeyLoginResponse]:
    return stub.PasskeyLogin(
        pb.PasskeyLoginRequest(
            assertion=factors_pb.PasskeyAssertion(
                challenge_id=challenge_id, credential_json=credential_json
            )
        )
    )


async def user_with_passkey(
    launched: Launched, email: str = "alice@example.com"
) -> tuple[pb.RegisterResponse | pb.LoginResponse, SoftAuthenticator]:
    session = await register(launched.stub, email=email)
    authenticator = SoftAuthenticator(ORIGIN)
    await add_passkey(launched.stub, session.access_token, authenticator)
    return session, authenticator


async def complete_login_with_passkey(
    stub: Stub, authenticator: SoftAuthenticator
) -> pb.CompleteLoginResponse:
    """Log in with the password, then answer the second step with the passkey."""
    step = (await login(stub)).second_factor
    begun = await stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(pending_login_token=step.pending_login_token)
    )
    completed: pb.CompleteLoginResponse = await stub.CompleteLogin(
        pb.CompleteLoginRequest(
            pending_login_token=step.pending_login_token,
            proof=factors_pb.FactorProof(
                passkey=factors_pb.PasskeyAssertion(
                    challenge_id=begun.challenge_id,
                    credential_json=authenticator.get(begun.options_json),
                )
            ),
        )
    )
    return completed


# --- registration ---------------------------------------------------------------


async def test_registration_options_ask_for_a_discoverable_credential_for_this_user(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session = await register(launched.stub)

    begun = await launched.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(name="Laptop"), metadata=bearer(session.access_token)
    )

    options = json.loads(begun.options_json)
    assert options["rp"]["id"] == RP_ID
    assert unb64url(options["user"]["id"]) == uuid.UUID(session.user_id).bytes
    assert options["user"]["name"] == "alice@example.com"
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert uuid.UUID(begun.challenge_id)


async def test_registering_a_passkey_adds_it_and_ends_the_other_sessions(
    launch: Launch, pool: Pool
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    caller = await register(launched.stub)
    other = await login(launched.stub)

    finished = await add_passkey(launched.stub, caller.access_token, SoftAuthenticator(ORIGIN))

    assert finished.factor.type == factors_pb.FACTOR_TYPE_PASSKEY
    assert finished.factor.name == "Laptop"
    assert finished.signed_in.session_id == caller.session_id
    assert finished.signed_in.access_token
    assert await refresh_failure(launched.stub, other.refresh_token) == REVOKED
    logged = await PgRevocationLog(pool).read_after(0, limit=100)
    assert [(str(e.session_id), e.reason) for e in logged] == [
        (other.session_id, SessionEndReason.SECOND_FACTOR_CHANGED)
    ]
    events = await pool.fetch("SELECT detail FROM audit_events WHERE event = 'factor_enrolled'")
    assert [e["detail"]["factor_type"] for e in events] == ["passkey"]


async def test_the_first_factor_comes_with_recovery_codes_and_the_next_without(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session = await register(launched.stub)
    first = await add_passkey(launched.stub, session.access_token, SoftAuthenticator(ORIGIN))

    second = await add_passkey(
        launched.stub, first.signed_in.access_token, SoftAuthenticator(ORIGIN), name="Phone"
    )

    assert len(first.recovery_codes) == 10
    assert list(second.recovery_codes) == []


async def test_registration_options_exclude_the_users_passkeys(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session, authenticator = await user_with_passkey(launched)

    begun = await launched.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(), metadata=bearer(session.access_token)
    )

    excluded = [unb64url(c["id"]) for c in json.loads(begun.options_json)["excludeCredentials"]]
    assert excluded == [authenticator.credentials[0].id]


async def test_registration_from_another_origin_is_refused(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session = await register(launched.stub)
    begun = await launched.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(), metadata=bearer(session.access_token)
    )
    credential = SoftAuthenticator(ORIGIN).create(
        begun.options_json, origin="https://evil.example.net"
    )

    outcome = await refused(
        launched.stub.FinishPasskeyRegistration(
            pb.FinishPasskeyRegistrationRequest(
                challenge_id=begun.challenge_id, credential_json=credential
            ),
            metadata=bearer(session.access_token),
        )
    )

    assert outcome == FACTOR_INVALID


async def test_registration_challenge_of_another_session_is_refused(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    first = await register(launched.stub)
    second = await login(launched.stub)
    begun = await launched.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(), metadata=bearer(first.access_token)
    )

    outcome = await refused(
        launched.stub.FinishPasskeyRegistration(
            pb.FinishPasskeyRegistrationRequest(
                challenge_id=begun.challenge_id,
                credential_json=SoftAuthenticator(ORIGIN).create(begun.options_json),
            ),
            metadata=bearer(second.access_token),
        )
    )

    assert outcome == CHALLENGE_INVALID


# --- PasskeyLogin ---------------------------------------------------------------


async def test_passkey_login_options_allow_any_discoverable_passkey_with_verification(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)

    begun = await begin_login(launched.stub)

    options = json.loads(begun.options_json)
    assert options["rpId"] == RP_ID
    assert options.get("allowCredentials", []) == []
    assert options["userVerification"] == "required"


async def test_passkey_login_signs_the_passkeys_user_in_at_aal2(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)

    signed_in = await passkey_login(
        launched.stub, begun.challenge_id, authenticator.get(begun.options_json)
    )

    assert signed_in.user_id == session.user_id
    validated = await launched.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=signed_in.access_token)
    )
    assert validated.active
    assert validated.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2
    assert "hwk" in validated.amr


async def test_passkey_login_without_user_verification_is_refused(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)

    outcome = await refused(
        passkey_login(
            launched.stub,
            begun.challenge_id,
            authenticator.get(begun.options_json, user_verified=False),
        )
    )

    assert outcome == FACTOR_INVALID


async def test_a_challenge_answers_one_login_only(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)
    await passkey_login(launched.stub, begun.challenge_id, authenticator.get(begun.options_json))

    outcome = await refused(
        passkey_login(launched.stub, begun.challenge_id, authenticator.get(begun.options_json))
    )

    assert outcome == CHALLENGE_INVALID


async def test_concurrent_answers_to_one_challenge_sign_in_once(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)
    answers = [authenticator.get(begun.options_json) for _ in range(4)]

    outcomes = await asyncio.gather(
        *(passkey_login(launched.stub, begun.challenge_id, a) for a in answers),
        return_exceptions=True,
    )

    signed_in = [o for o in outcomes if isinstance(o, pb.PasskeyLoginResponse)]
    failures = [error_info(o)[:2] for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(signed_in) == 1
    assert failures == [CHALLENGE_INVALID] * 3


async def test_an_expired_challenge_is_refused(launch: Launch, clock: FrozenClock) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)
    clock.advance(CHALLENGE_LIFETIME + timedelta(seconds=1))

    outcome = await refused(
        passkey_login(launched.stub, begun.challenge_id, authenticator.get(begun.options_json))
    )

    assert outcome == CHALLENGE_INVALID


async def test_a_challenge_is_good_until_it_expires(launch: Launch, clock: FrozenClock) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)
    clock.advance(CHALLENGE_LIFETIME - timedelta(seconds=1))

    signed_in = await passkey_login(
        launched.stub, begun.challenge_id, authenticator.get(begun.options_json)
    )

    assert signed_in.user_id == session.user_id


async def test_an_assertion_from_another_origin_is_refused(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)

    outcome = await refused(
        passkey_login(
            launched.stub,
            begun.challenge_id,
            authenticator.get(begun.options_json, origin="https://login.example.com.evil.net"),
        )
    )

    assert outcome == FACTOR_INVALID


async def test_an_assertion_for_another_relying_party_is_refused(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)

    outcome = await refused(
        passkey_login(
            launched.stub,
            begun.challenge_id,
            authenticator.get(begun.options_json, rp_id="example.org"),
        )
    )

    assert outcome == FACTOR_INVALID


async def test_origins_setting_admits_the_listed_origin(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id="localhost", webauthn_origins="http://localhost:8080")
    session = await register(launched.stub)
    authenticator = SoftAuthenticator("http://localhost:8080")
    await add_passkey(launched.stub, session.access_token, authenticator)
    begun = await begin_login(launched.stub)

    signed_in = await passkey_login(
        launched.stub, begun.challenge_id, authenticator.get(begun.options_json)
    )

    assert signed_in.user_id == session.user_id


async def test_a_cloned_authenticator_is_refused_once_its_twin_has_signed(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    clone = authenticator.clone()
    begun = await begin_login(launched.stub)
    await passkey_login(launched.stub, begun.challenge_id, authenticator.get(begun.options_json))
    again = await begin_login(launched.stub)

    # The clone's counter is where the original's was: not above the stored count.
    outcome = await refused(
        passkey_login(launched.stub, again.challenge_id, clone.get(again.options_json))
    )

    assert outcome == FACTOR_INVALID


async def test_a_passkey_not_registered_here_is_refused(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    await user_with_passkey(launched)
    begun = await begin_login(launched.stub)
    stranger = SoftAuthenticator(ORIGIN)
    stranger.create(
        json.dumps(
            {
                "challenge": "AAAA",
                "rp": {"id": RP_ID, "name": "x"},
                "user": {"id": "AAAAAAAAAAAAAAAAAAAAAA", "name": "x"},
            }
        )
    )

    outcome = await refused(
        passkey_login(launched.stub, begun.challenge_id, stranger.get(begun.options_json))
    )

    assert outcome == FACTOR_INVALID


async def test_failed_passkey_logins_are_throttled_as_logins(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID, login_failures_per_account_and_ip="2")
    _, authenticator = await user_with_passkey(launched)
    for _ in range(2):
        begun = await begin_login(launched.stub)
        bad = authenticator.get(begun.options_json, origin="https://evil.example.net")
        assert await refused(passkey_login(launched.stub, begun.challenge_id, bad)) == (
            FACTOR_INVALID
        )
    begun = await begin_login(launched.stub)

    outcome = await refused(
        passkey_login(launched.stub, begun.challenge_id, authenticator.get(begun.options_json))
    )

    assert outcome == RATE_LIMITED


# --- assertions for a user (StepUp, CompleteLogin) --------------------------------


async def test_step_up_options_name_the_users_passkeys(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session, authenticator = await user_with_passkey(launched)

    begun = await launched.stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(), metadata=bearer(session.access_token)
    )

    allowed = [unb64url(c["id"]) for c in json.loads(begun.options_json)["allowCredentials"]]
    assert allowed == [authenticator.credentials[0].id]


async def test_the_users_passkey_verifies_a_step_up_challenge_of_their_session(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session, authenticator = await user_with_passkey(launched)
    begun = await launched.stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(), metadata=bearer(session.access_token)
    )
    assertion = PasskeyAssertion(
        challenge_id=uuid.UUID(begun.challenge_id),
        credential_json=authenticator.get(begun.options_json),
    )

    verified = await launched.server.passkeys.verify_assertion(
        UserId(uuid.UUID(session.user_id)), assertion, binding=uuid.UUID(session.session_id)
    )

    assert verified.factor_id is not None


async def test_another_users_passkey_is_refused_for_a_step_up(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    alice, _ = await user_with_passkey(launched)
    _, bobs = await user_with_passkey(launched, email="bob@example.com")
    begun = await launched.stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(), metadata=bearer(alice.access_token)
    )
    options = json.loads(begun.options_json)
    # Bob's authenticator answers Alice's challenge (as if the page had asked it).
    assertion = PasskeyAssertion(
        challenge_id=uuid.UUID(begun.challenge_id),
        credential_json=bobs.assert_with(bobs.credentials[0], options),
    )

    with pytest.raises(SecondFactorInvalid):
        await launched.server.passkeys.verify_assertion(
            UserId(uuid.UUID(alice.user_id)), assertion, binding=uuid.UUID(alice.session_id)
        )


async def test_a_step_up_challenge_does_not_verify_for_another_binding(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    session, authenticator = await user_with_passkey(launched)
    begun = await launched.stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(), metadata=bearer(session.access_token)
    )
    assertion = PasskeyAssertion(
        challenge_id=uuid.UUID(begun.challenge_id),
        credential_json=authenticator.get(begun.options_json),
    )

    with pytest.raises(PasskeyChallengeInvalid):
        await launched.server.passkeys.verify_assertion(
            UserId(uuid.UUID(session.user_id)), assertion, binding=uuid.uuid4()
        )


async def test_a_passkey_steps_a_session_up_to_aal2(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    # A new password session of the user (its second step answered with the passkey).
    session = await complete_login_with_passkey(launched.stub, authenticator)
    begun = await launched.stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(), metadata=bearer(session.access_token)
    )

    stepped = await launched.stub.StepUp(
        pb.StepUpRequest(
            proof=factors_pb.FactorProof(
                passkey=factors_pb.PasskeyAssertion(
                    challenge_id=begun.challenge_id,
                    credential_json=authenticator.get(begun.options_json),
                )
            )
        ),
        metadata=bearer(session.access_token),
    )

    assert stepped.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


async def test_a_passkey_completes_a_login_with_its_password(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    owner, authenticator = await user_with_passkey(launched)

    session = await complete_login_with_passkey(launched.stub, authenticator)

    assert session.user_id == owner.user_id
    validated = await launched.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=session.access_token)
    )
    assert validated.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2
    assert {"pwd", "hwk"} <= set(validated.amr)


async def test_a_login_challenge_is_not_good_for_another_pending_login(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    first = (await login(launched.stub)).second_factor.pending_login_token
    second = (await login(launched.stub)).second_factor.pending_login_token
    begun = await launched.stub.BeginPasskeyAssertion(
        pb.BeginPasskeyAssertionRequest(pending_login_token=first)
    )

    outcome = await refused(
        launched.stub.CompleteLogin(
            pb.CompleteLoginRequest(
                pending_login_token=second,
                proof=factors_pb.FactorProof(
                    passkey=factors_pb.PasskeyAssertion(
                        challenge_id=begun.challenge_id,
                        credential_json=authenticator.get(begun.options_json),
                    )
                ),
            )
        )
    )

    assert outcome == CHALLENGE_INVALID


# --- fields and configuration ------------------------------------------------------


@pytest.mark.parametrize(
    ("challenge_id", "credential_json"),
    [
        ("not-a-uuid", "{}"),
        ("{12345678-1234-1234-1234-123456789012}", "{}"),
        (str(uuid.uuid4()), "not json"),
        (str(uuid.uuid4()), "x" * (MAX_CREDENTIAL_JSON + 1)),
    ],
)
async def test_malformed_passkey_login_fields_are_invalid(
    launch: Launch, challenge_id: str, credential_json: str
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)

    outcome = await refused(passkey_login(launched.stub, challenge_id, credential_json))

    assert outcome == INVALID_FIELD


async def test_every_passkey_rpc_is_disabled_without_a_relying_party(launch: Launch) -> None:
    launched = await launch()
    session = await register(launched.stub)
    token = bearer(session.access_token)
    calls: list[Awaitable[object]] = [
        launched.stub.BeginPasskeyRegistration(
            pb.BeginPasskeyRegistrationRequest(), metadata=token
        ),
        launched.stub.FinishPasskeyRegistration(
            pb.FinishPasskeyRegistrationRequest(challenge_id=str(uuid.uuid4())), metadata=token
        ),
        launched.stub.BeginPasskeyAssertion(pb.BeginPasskeyAssertionRequest()),
        passkey_login(launched.stub, str(uuid.uuid4()), "{}"),
    ]

    outcomes = [await refused(call) for call in calls]

    assert {reason for _, reason in outcomes} == {"PASSKEYS_DISABLED"}


async def test_enrolling_a_passkey_with_a_pending_login_completes_the_login(
    launch: Launch,
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID, second_factor_policy="all")
    await launched.stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))
    step = (await login(launched.stub)).second_factor
    assert step.enrolment_required
    begun = await launched.stub.BeginPasskeyRegistration(
        pb.BeginPasskeyRegistrationRequest(pending_login_token=step.pending_login_token)
    )

    finished = await launched.stub.FinishPasskeyRegistration(
        pb.FinishPasskeyRegistrationRequest(
            challenge_id=begun.challenge_id,
            credential_json=SoftAuthenticator(ORIGIN).create(begun.options_json),
            pending_login_token=step.pending_login_token,
        )
    )

    assert finished.factor.type == factors_pb.FACTOR_TYPE_PASSKEY
    assert finished.signed_in.refresh_token
    validated = await launched.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=finished.signed_in.access_token)
    )
    assert validated.active
    assert validated.assurance_level == factors_pb.ASSURANCE_LEVEL_AAL2


# --- the user's factors ------------------------------------------------------------


async def test_a_used_passkey_is_listed_with_its_last_use(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    clock.advance(timedelta(minutes=1))
    begun = await begin_login(launched.stub)
    signed_in = await passkey_login(
        launched.stub, begun.challenge_id, authenticator.get(begun.options_json)
    )

    listed = await launched.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(signed_in.access_token)
    )

    [factor] = listed.factors
    assert factor.type == factors_pb.FACTOR_TYPE_PASSKEY
    assert factor.name == "Laptop"
    assert factor.last_used_at.ToDatetime(tzinfo=UTC) == clock.now()


async def test_a_removed_passkey_signs_nobody_in(launch: Launch) -> None:
    launched = await launch(webauthn_rp_id=RP_ID)
    _, authenticator = await user_with_passkey(launched)
    begun = await begin_login(launched.stub)
    session = await passkey_login(
        launched.stub, begun.challenge_id, authenticator.get(begun.options_json)
    )
    listed = await launched.stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(session.access_token)
    )
    await launched.stub.RemoveFactor(
        pb.RemoveFactorRequest(factor_id=listed.factors[0].factor_id),
        metadata=bearer(session.access_token),
    )
    again = await begin_login(launched.stub)

    outcome = await refused(
        passkey_login(launched.stub, again.challenge_id, authenticator.get(again.options_json))
    )

    assert outcome == FACTOR_INVALID
