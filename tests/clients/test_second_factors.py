"""The Python client's second factors against the live server: the two-step login, StepUp
after STEP_UP_REQUIRED, the factor RPCs' wrappers, and the assurance level a verified token
carries.

TOTP codes are computed with pyotp from the enrolment's secret at the server's time (the
`clock` both share). A code is good once (the server refuses a replayed time step), so a
test moves the clock a step on before it needs another code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta

import pyotp
import pytest
import pytest_asyncio
from authsvc_client import (
    AssuranceLevel,
    AuthClient,
    FactorAlreadyEnrolled,
    FactorType,
    PendingLogin,
    PendingLoginInvalid,
    RecoveryCode,
    SecondFactorInvalid,
    SecondFactorRequired,
    SessionExpired,
    StepUpRequired,
    TokenManager,
    TokenPair,
    TokenVerifier,
    TotpCode,
)

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.clients.conftest import RpcCounter
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
NEW_PASSWORD = "a brand new passphrase"
# RFC 6238 as the server uses it: 30-second steps.
TOTP_STEP = timedelta(seconds=30)
# The server's default AUTHSVC_STEP_UP_WINDOW.
STEP_UP_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class TotpUser:
    """An account with a confirmed TOTP: its secret and its recovery codes."""

    secret: str = field(repr=False)
    recovery_codes: tuple[str, ...] = field(repr=False)
    factor_id: uuid.UUID


def current_code(user: TotpUser, clock: FrozenClock) -> TotpCode:
    return TotpCode(pyotp.TOTP(user.secret).at(clock.now()))


async def enrol_totp_user(client: AuthClient, clock: FrozenClock) -> TotpUser:
    """Register EMAIL with `client` and enrol a TOTP in that fresh session (a new sign-in is
    recent enough), then move to the next time step so the next code is unused."""
    await client.register(EMAIL, PASSWORD)
    enrolment = await client.enrol_totp("Phone")
    confirmation = await client.confirm_totp(
        enrolment.factor_id, pyotp.TOTP(enrolment.secret).at(clock.now())
    )
    clock.advance(TOTP_STEP)
    return TotpUser(enrolment.secret, confirmation.recovery_codes, confirmation.factor.factor_id)


@pytest_asyncio.fixture
async def totp_user(server: AuthServer, clock: FrozenClock) -> AsyncIterator[TotpUser]:
    """EMAIL with a confirmed TOTP, enrolled by a client of its own (not the test's)."""
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as setup:
        yield await enrol_totp_user(setup, clock)


async def pending_login(client: AuthClient) -> PendingLogin:
    with pytest.raises(SecondFactorRequired) as caught:
        await client.login(EMAIL, PASSWORD)
    return caught.value.pending


async def signed_in_with_totp(client: AuthClient, user: TotpUser, clock: FrozenClock) -> TokenPair:
    pair = await client.complete_login(await pending_login(client), current_code(user, clock))
    clock.advance(TOTP_STEP)
    return pair


# --- two-step login ----------------------------------------------------------------------


async def test_login_of_a_totp_user_raises_second_factor_required_without_tokens(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    with pytest.raises(SecondFactorRequired) as caught:
        await client.login(EMAIL, PASSWORD)

    pending = caught.value.pending
    assert FactorType.TOTP in pending.factor_types
    assert not pending.enrolment_required
    assert pending.expires_at > clock.now()
    assert pending.pending_login_token not in f"{caught.value} {pending!r}"
    assert await client.tokens.tokens() is None


async def test_complete_login_with_the_current_totp_code_signs_the_client_in_at_aal2(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    pending = await pending_login(client)

    pair = await client.complete_login(pending, current_code(totp_user, clock))

    assert await client.tokens.tokens() == pair
    [current] = [s for s in (await client.list_sessions()).sessions if s.is_current]
    assert (current.session_id, current.assurance_level) == (pair.session_id, AssuranceLevel.AAL2)


async def test_complete_login_with_the_pending_token_alone_signs_in(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    token = (await pending_login(client)).pending_login_token

    pair = await client.complete_login(token, current_code(totp_user, clock))

    assert await client.tokens.tokens() == pair


async def test_complete_login_with_a_recovery_code_signs_in(
    client: AuthClient, totp_user: TotpUser
) -> None:
    pending = await pending_login(client)

    pair = await client.complete_login(pending, RecoveryCode(totp_user.recovery_codes[0]))

    assert await client.tokens.tokens() == pair


async def test_complete_login_with_a_wrong_code_raises_second_factor_invalid_signing_nobody_in(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    pending = await pending_login(client)
    right = current_code(totp_user, clock).code
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    with pytest.raises(SecondFactorInvalid) as caught:
        await client.complete_login(pending, TotpCode(wrong))

    assert caught.value.reason == "SECOND_FACTOR_INVALID"
    assert await client.tokens.tokens() is None


async def test_complete_login_with_an_unknown_pending_token_raises_pending_login_invalid(
    client: AuthClient,
) -> None:
    with pytest.raises(PendingLoginInvalid) as caught:
        await client.complete_login("not-a-pending-login", TotpCode("123456"))

    assert caught.value.reason == "PENDING_LOGIN_INVALID"


async def test_login_of_an_account_that_must_enrol_raises_with_enrolment_required(
    launch: Launch,
) -> None:
    launched = await launch(second_factor_policy="all")
    async with AuthClient.connect(f"127.0.0.1:{launched.server.port}") as client:
        with pytest.raises(SecondFactorRequired) as caught:
            await client.register(EMAIL, PASSWORD)

        assert await client.tokens.tokens() is None
    assert (caught.value.pending.enrolment_required, caught.value.pending.factor_types) == (
        True,
        (),
    )


async def test_a_used_pending_login_raises_pending_login_invalid(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    pending = await pending_login(client)
    await client.complete_login(pending, current_code(totp_user, clock))
    clock.advance(TOTP_STEP)

    with pytest.raises(PendingLoginInvalid):
        await client.complete_login(pending, current_code(totp_user, clock))


# --- step-up -----------------------------------------------------------------------------


async def test_step_up_required_is_raised_with_the_factor_types_not_retried_nor_refreshed(
    server: AuthServer, clock: FrozenClock, totp_user: TotpUser, server_rpcs: RpcCounter
) -> None:
    ended: list[SessionExpired] = []
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, on_session_expired=ended.append
    ) as client:
        pair = await signed_in_with_totp(client, totp_user, clock)
        clock.advance(STEP_UP_WINDOW + timedelta(minutes=1))

        with pytest.raises(StepUpRequired) as caught:
            await client.change_password(PASSWORD, NEW_PASSWORD)

        assert await client.tokens.tokens() == pair
    assert caught.value.reason == "STEP_UP_REQUIRED"
    assert FactorType.TOTP in caught.value.factor_types
    assert (server_rpcs("ChangePassword"), server_rpcs("Refresh"), ended) == (1, 0, [])


async def test_after_step_up_the_same_change_password_succeeds_in_the_same_session(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    before = await signed_in_with_totp(client, totp_user, clock)
    clock.advance(STEP_UP_WINDOW + timedelta(minutes=1))
    with pytest.raises(StepUpRequired):
        await client.change_password(PASSWORD, NEW_PASSWORD)

    stepped_up = await client.step_up(current_code(totp_user, clock))
    revoked = await client.change_password(PASSWORD, NEW_PASSWORD)

    after = await client.tokens.tokens()
    assert after is not None
    assert (after.session_id, after.refresh_token) == (before.session_id, before.refresh_token)
    assert after.access_token != before.access_token
    assert stepped_up.assurance_level is AssuranceLevel.AAL2
    assert stepped_up.step_up_expires_at > clock.now()
    # The one other session: the enrolling client's.
    assert revoked == 1


async def test_step_up_with_a_wrong_code_raises_second_factor_invalid_keeping_the_session(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    before = await signed_in_with_totp(client, totp_user, clock)
    right = current_code(totp_user, clock).code

    with pytest.raises(SecondFactorInvalid):
        await client.step_up(TotpCode(f"{(int(right) + 1) % 1_000_000:06d}"))

    assert await client.tokens.tokens() == before


async def test_a_step_up_token_adopted_during_a_refresh_keeps_the_refreshed_session(
    client: AuthClient, stub: Stub, totp_user: TotpUser, clock: FrozenClock
) -> None:
    """The manager must not drop the successor refresh token of a rotation in flight when a
    step-up token of the same session arrives: the old one is spent."""
    pair = await signed_in_with_totp(client, totp_user, clock)
    entered, release = asyncio.Event(), asyncio.Event()

    async def gated_refresh(refresh_token: str, idempotency_key: str) -> TokenPair:
        entered.set()
        await release.wait()
        response = await stub.Refresh(
            pb.RefreshRequest(refresh_token=refresh_token, idempotency_key=idempotency_key)
        )
        return TokenPair(
            access_token=response.access_token,
            access_token_expires_at=response.access_token_expires_at.ToDatetime(tzinfo=UTC),
            refresh_token=response.refresh_token,
            refresh_token_expires_at=response.refresh_token_expires_at.ToDatetime(tzinfo=UTC),
            session_id=uuid.UUID(response.session_id),
            user_id=uuid.UUID(response.user_id),
        )

    manager = TokenManager(gated_refresh, now=clock.now)
    await manager.set_tokens(pair)
    refreshing = asyncio.ensure_future(manager.refresh())
    await entered.wait()
    # The step-up token itself: what StepUp answered the client just now.
    await client.step_up(current_code(totp_user, clock))
    stepped_up = await client.tokens.tokens()
    assert stepped_up is not None
    adopting = asyncio.ensure_future(
        manager.adopt_access_token(
            pair.session_id, stepped_up.access_token, stepped_up.access_token_expires_at
        )
    )

    release.set()
    rotated = await refreshing

    assert await adopting
    held = await manager.tokens()
    assert held is not None
    assert (held.refresh_token, held.access_token) == (
        rotated.refresh_token,
        stepped_up.access_token,
    )


# --- the factor RPCs ---------------------------------------------------------------------


async def test_list_factors_shows_the_confirmed_totp_and_the_recovery_codes_left(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    await signed_in_with_totp(client, totp_user, clock)

    listed = await client.list_factors()

    [totp] = listed.factors
    assert (totp.factor_id, totp.type, totp.name) == (totp_user.factor_id, FactorType.TOTP, "Phone")
    assert listed.recovery_codes_remaining == len(totp_user.recovery_codes)


async def test_enrolling_a_second_totp_raises_factor_already_enrolled(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    await signed_in_with_totp(client, totp_user, clock)

    with pytest.raises(FactorAlreadyEnrolled):
        await client.enrol_totp("Another phone")


async def test_remove_factor_after_step_up_lets_the_password_alone_sign_in(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    await signed_in_with_totp(client, totp_user, clock)
    await client.step_up(current_code(totp_user, clock))

    await client.remove_factor(totp_user.factor_id)
    pair = await client.login(EMAIL, PASSWORD)

    assert await client.tokens.tokens() == pair


async def test_regenerated_recovery_codes_replace_the_old_set(
    client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    await signed_in_with_totp(client, totp_user, clock)
    await client.step_up(current_code(totp_user, clock))

    regenerated = await client.regenerate_recovery_codes()

    assert set(regenerated.recovery_codes).isdisjoint(totp_user.recovery_codes)
    with pytest.raises(SecondFactorInvalid):
        await client.complete_login(
            await pending_login(client), RecoveryCode(totp_user.recovery_codes[0])
        )
    await client.complete_login(
        await pending_login(client), RecoveryCode(regenerated.recovery_codes[0])
    )


async def test_an_account_that_must_enrol_completes_its_login_by_confirming_a_totp(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(second_factor_policy="all")
    async with AuthClient.connect(f"127.0.0.1:{launched.server.port}", now=clock.now) as client:
        with pytest.raises(SecondFactorRequired) as caught:
            await client.register(EMAIL, PASSWORD)
        pending = caught.value.pending

        enrolment = await client.enrol_totp("Phone", pending=pending)
        confirmation = await client.confirm_totp(
            enrolment.factor_id, pyotp.TOTP(enrolment.secret).at(clock.now()), pending=pending
        )

        assert pending.enrolment_required
        assert confirmation.tokens is not None
        assert await client.tokens.tokens() == confirmation.tokens
        assert confirmation.recovery_codes


# --- verified tokens ---------------------------------------------------------------------


async def test_a_verified_two_factor_token_carries_aal2_and_its_methods(
    client: AuthClient, service_client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    pair = await signed_in_with_totp(client, totp_user, clock)

    principal = await TokenVerifier(service_client, now=clock.now).verify(pair.access_token)
    validation = await service_client.validate_token(pair.access_token)

    assert principal.assurance_level is AssuranceLevel.AAL2
    assert {"pwd", "otp"} <= set(principal.amr)
    assert (validation.assurance_level, validation.amr) == (AssuranceLevel.AAL2, principal.amr)


async def test_a_verified_password_token_carries_aal1_and_pwd(
    client: AuthClient, service_client: AuthClient, clock: FrozenClock
) -> None:
    pair = await client.register(EMAIL, PASSWORD)

    principal = await TokenVerifier(service_client, now=clock.now).verify(pair.access_token)

    assert (principal.assurance_level, principal.amr) == (AssuranceLevel.AAL1, ("pwd",))


async def test_a_verifier_requiring_aal2_refuses_a_password_token_with_step_up_required(
    client: AuthClient, service_client: AuthClient, clock: FrozenClock
) -> None:
    pair = await client.register(EMAIL, PASSWORD)
    verifier = TokenVerifier(service_client, now=clock.now, min_assurance=AssuranceLevel.AAL2)

    with pytest.raises(StepUpRequired) as caught:
        await verifier.verify(pair.access_token)

    assert caught.value.reason == "STEP_UP_REQUIRED"


async def test_a_verifier_requiring_aal2_accepts_a_stepped_up_token(
    client: AuthClient, service_client: AuthClient, totp_user: TotpUser, clock: FrozenClock
) -> None:
    await signed_in_with_totp(client, totp_user, clock)
    await client.step_up(current_code(totp_user, clock))
    pair = await client.tokens.tokens()
    assert pair is not None
    verifier = TokenVerifier(service_client, now=clock.now)

    principal = await verifier.verify(pair.access_token, min_assurance=AssuranceLevel.AAL2)

    assert principal.session_id == pair.session_id
