"""Session expiry: idle timeout, sliding, the absolute cap, remember_me, access-token TTL.

Every test here runs a server with short settings and moves the FrozenClock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import timestamp_pb2

from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import (
    ACCESS_TOKEN_TTL,
    CLOCK_SKEW,
    Stub,
    bearer,
    error_info,
    refresh,
    refresh_failure,
    register,
    validate,
)

pytestmark = pytest.mark.asyncio

IDLE_TIMEOUT = timedelta(hours=1)
LIFETIME = timedelta(hours=3)
REMEMBER_ME_LIFETIME = timedelta(hours=10)
# Any, not str: it is unpacked into launch(), whose server_pool/server_clock are not strings.
SHORT_SETTINGS: dict[str, Any] = {
    "session_idle_timeout": "1h",
    "session_lifetime": "3h",
    "remember_me_lifetime": "10h",
}
# Refreshing this often keeps a session inside its idle timeout.
REFRESH_EVERY = timedelta(minutes=50)
JUST_PAST = timedelta(seconds=1)


@pytest_asyncio.fixture
async def stub(launch: Launch) -> Stub:
    """This module's stub: a server with SHORT_SETTINGS."""
    return (await launch(**SHORT_SETTINGS)).stub


def at(timestamp: timestamp_pb2.Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


async def only_session(stub: Stub, access_token: str) -> pb.Session:
    response: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(), metadata=bearer(access_token)
    )
    (session,) = response.sessions
    return session


async def refresh_periodically(
    stub: Stub, clock: FrozenClock, refresh_token: str, times: int
) -> pb.RefreshResponse:
    """Refresh `times` times, REFRESH_EVERY apart; return the last answer."""
    response: pb.RefreshResponse | None = None
    for _ in range(times):
        clock.advance(REFRESH_EVERY)
        response = await refresh(stub, refresh_token)
        refresh_token = response.refresh_token
    assert response is not None
    return response


# --- idle timeout -----------------------------------------------------------


async def test_refresh_after_the_idle_timeout_is_session_expired(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    clock.advance(IDLE_TIMEOUT + JUST_PAST)

    failure = await refresh_failure(stub, signed_in.refresh_token)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_EXPIRED")


async def test_validate_token_after_the_idle_timeout_reports_session_expired(
    launch: Launch, clock: FrozenClock
) -> None:
    # A TTL beyond the idle timeout: the token is capped at the session's deadline, and its
    # refusal says the session expired.
    stub = (await launch(**SHORT_SETTINGS, access_token_ttl="2h")).stub
    signed_in = await register(stub)
    clock.advance(IDLE_TIMEOUT + JUST_PAST)

    validation = await validate(stub, signed_in.access_token)

    assert (validation.active, validation.inactive_reason) == (False, "SESSION_EXPIRED")
    assert (validation.user_id, validation.session_id) == (
        signed_in.user_id,
        signed_in.session_id,
    )


# --- sliding ----------------------------------------------------------------


async def test_refresh_slides_the_idle_expiry_forward(stub: Stub, clock: FrozenClock) -> None:
    signed_in = await register(stub)
    assert at(signed_in.refresh_token_expires_at) == clock.now() + IDLE_TIMEOUT
    clock.advance(REFRESH_EVERY)

    refreshed = await refresh(stub, signed_in.refresh_token)

    assert at(refreshed.refresh_token_expires_at) == clock.now() + IDLE_TIMEOUT
    session = await only_session(stub, refreshed.access_token)
    assert at(session.last_active_at) == clock.now()
    assert at(session.idle_expires_at) == clock.now() + IDLE_TIMEOUT


async def test_refreshing_every_50_minutes_keeps_the_session_past_its_first_idle_deadline(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    first_idle_deadline = at(signed_in.refresh_token_expires_at)

    latest = await refresh_periodically(stub, clock, signed_in.refresh_token, times=3)

    assert clock.now() > first_idle_deadline
    assert latest.session_id == signed_in.session_id
    assert (await validate(stub, latest.access_token)).active


# --- the absolute cap -------------------------------------------------------


async def test_sliding_never_passes_the_absolute_lifetime(stub: Stub, clock: FrozenClock) -> None:
    signed_in = await register(stub)
    session_end = clock.now() + LIFETIME

    # The third refresh is 150 min in: idle expiry would be 210 min, past the 180 min cap.
    latest = await refresh_periodically(stub, clock, signed_in.refresh_token, times=3)

    assert at(latest.refresh_token_expires_at) == session_end
    session = await only_session(stub, latest.access_token)
    assert at(session.expires_at) == session_end
    assert at(session.idle_expires_at) == session_end


async def test_refresh_after_the_absolute_lifetime_is_session_expired(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    session_end = clock.now() + LIFETIME
    latest = await refresh_periodically(stub, clock, signed_in.refresh_token, times=3)
    clock.advance(timedelta(minutes=25))
    latest = await refresh(stub, latest.refresh_token)  # recently active: 175 min in
    clock.advance(session_end - clock.now())

    failure = await refresh_failure(stub, latest.refresh_token)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_EXPIRED")


# --- remember_me ------------------------------------------------------------


@pytest.mark.parametrize(
    ("remember_me", "lifetime"),
    [(False, LIFETIME), (True, REMEMBER_ME_LIFETIME)],
    ids=["session", "remember-me"],
)
async def test_remember_me_chooses_the_absolute_lifetime(
    stub: Stub, remember_me: bool, lifetime: timedelta
) -> None:
    signed_in = await register(stub, remember_me=remember_me)

    session = await only_session(stub, signed_in.access_token)

    assert session.remember_me is remember_me
    assert at(session.expires_at) - at(session.created_at) == lifetime
    assert at(session.idle_expires_at) - at(session.created_at) == IDLE_TIMEOUT


async def test_remember_me_session_outlives_the_normal_lifetime(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub, remember_me=True)
    normal_end = clock.now() + LIFETIME

    latest = await refresh_periodically(stub, clock, signed_in.refresh_token, times=4)

    assert clock.now() > normal_end
    assert latest.session_id == signed_in.session_id
    assert (await validate(stub, latest.access_token)).active


# --- access-token expiry ----------------------------------------------------


async def test_access_token_is_accepted_until_its_ttl(stub: Stub, clock: FrozenClock) -> None:
    signed_in = await register(stub)
    clock.advance(ACCESS_TOKEN_TTL - JUST_PAST)

    session = await only_session(stub, signed_in.access_token)

    assert session.session_id == signed_in.session_id


async def test_expired_access_token_is_refused_with_token_expired(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(signed_in.access_token))

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_replaying_a_rotated_token_past_its_own_expiry_is_expired_not_reuse(
    stub: Stub, clock: FrozenClock
) -> None:
    # Past its expiry the token could not have been used, so it is no evidence of theft:
    # the session lives on (a replay before then is reuse; see test_refresh).
    signed_in = await register(stub)
    latest = await refresh_periodically(stub, clock, signed_in.refresh_token, times=2)
    # The first token's own expiry (the idle deadline when it was issued) has
    # passed, but the session slid on and is live.
    assert clock.now() > at(signed_in.refresh_token_expires_at)

    replayed = await refresh_failure(stub, signed_in.refresh_token)

    assert replayed == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_EXPIRED")
    assert (await refresh(stub, latest.refresh_token)).session_id == signed_in.session_id


# Two tabs refresh as the token expires: the slower one, past the token's own expiry but
# within the grace period of its rotation (its last instant included), gets the same successor.
@pytest.mark.parametrize(
    "after_rotation",
    [timedelta(seconds=2), timedelta(seconds=10)],  # 10 s: the default refresh_grace_period
    ids=["in_grace", "at_the_grace_edge"],
)
async def test_a_token_rotated_just_before_its_expiry_still_recovers_its_successor_in_grace(
    launch: Launch, clock: FrozenClock, after_rotation: timedelta
) -> None:
    launched = await launch(session_idle_timeout="1h")
    signed_in = await register(launched.stub)
    clock.advance(timedelta(hours=1) - timedelta(seconds=1))
    first_tab = await refresh(launched.stub, signed_in.refresh_token)
    clock.advance(after_rotation)

    second_tab = await refresh(launched.stub, signed_in.refresh_token)

    assert second_tab.refresh_token == first_tab.refresh_token
    assert second_tab.session_id == signed_in.session_id


async def test_replaying_a_rotated_token_at_exactly_its_own_expiry_is_expired_not_reuse(
    stub: Stub, clock: FrozenClock
) -> None:
    signed_in = await register(stub)
    clock.advance(timedelta(minutes=1))
    latest = await refresh(stub, signed_in.refresh_token)
    clock.advance(IDLE_TIMEOUT - timedelta(minutes=1))
    assert clock.now() == at(signed_in.refresh_token_expires_at)

    replayed = await refresh_failure(stub, signed_in.refresh_token)

    assert replayed == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_EXPIRED")
    assert (await refresh(stub, latest.refresh_token)).session_id == signed_in.session_id
