"""Exactly-once Refresh: a rotated token presented again with its rotation's idempotency key
gets the same successor for as long as that successor is current, and is never taken for
theft; any other presentation after the grace window still is. Over a real socket."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest
from prometheus_client import REGISTRY

from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import Stub, error_info, register, validate

pytestmark = pytest.mark.asyncio

# The default refresh_grace_period is 10s.
WITHIN_GRACE = timedelta(seconds=5)
PAST_GRACE = timedelta(seconds=11)


def new_key() -> str:
    return str(uuid.uuid4())


async def keyed_refresh(stub: Stub, refresh_token: str, key: str) -> pb.RefreshResponse:
    response: pb.RefreshResponse = await stub.Refresh(
        pb.RefreshRequest(refresh_token=refresh_token, idempotency_key=key)
    )
    return response


async def keyed_refresh_failure(
    stub: Stub, refresh_token: str, key: str
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keyed_refresh(stub, refresh_token, key)
    return error_info(caught.value)


def refreshes(outcome: str) -> float:
    value = REGISTRY.get_sample_value("authsvc_refreshes_total", {"outcome": outcome})
    assert value is not None
    return value


async def test_same_token_and_key_after_the_grace_window_gets_the_same_successor(
    stub: Stub, clock: FrozenClock
) -> None:
    first = await register(stub)
    key = new_key()
    answered = await keyed_refresh(stub, first.refresh_token, key)
    clock.advance(PAST_GRACE)

    again = await keyed_refresh(stub, first.refresh_token, key)

    assert again.refresh_token == answered.refresh_token
    assert again.session_id == answered.session_id
    # A freshly minted access token, that works.
    assert again.access_token != answered.access_token
    validation = await validate(stub, again.access_token)
    assert (validation.active, validation.session_id) == (True, first.session_id)


async def test_a_retry_with_the_same_key_raises_no_alarm_and_counts_as_idempotent_replay(
    stub: Stub, clock: FrozenClock
) -> None:
    first = await register(stub)
    key = new_key()
    await keyed_refresh(stub, first.refresh_token, key)
    clock.advance(PAST_GRACE)
    reused, replayed = refreshes("reused"), refreshes("idempotent_replay")

    await keyed_refresh(stub, first.refresh_token, key)

    assert (refreshes("reused"), refreshes("idempotent_replay")) == (reused, replayed + 1)


async def test_the_successor_answered_again_keeps_the_session_going(
    stub: Stub, clock: FrozenClock
) -> None:
    first = await register(stub)
    key = new_key()
    await keyed_refresh(stub, first.refresh_token, key)
    clock.advance(PAST_GRACE)
    again = await keyed_refresh(stub, first.refresh_token, key)

    third = await keyed_refresh(stub, again.refresh_token, new_key())

    assert third.session_id == first.session_id


async def test_a_retry_is_answered_after_the_rotated_tokens_own_expiry_and_a_sweep(
    launch: Launch, clock: FrozenClock
) -> None:
    # The first token expires 10 minutes after login; rotated at 6, the session lives to 16.
    launched = await launch(session_idle_timeout="10m")
    first = await register(launched.stub)
    clock.advance(timedelta(minutes=6))
    key = new_key()
    answered = await keyed_refresh(launched.stub, first.refresh_token, key)
    clock.advance(timedelta(minutes=7))
    await launched.server.sweeper.run_once()

    again = await keyed_refresh(launched.stub, first.refresh_token, key)

    assert again.refresh_token == answered.refresh_token


@pytest.mark.parametrize("replay_key", [new_key(), ""], ids=["another_key", "no_key"])
async def test_same_token_with_another_key_or_none_after_the_window_is_reuse(
    stub: Stub, clock: FrozenClock, replay_key: str
) -> None:
    first = await register(stub)
    answered = await keyed_refresh(stub, first.refresh_token, new_key())
    clock.advance(PAST_GRACE)

    code, reason, _ = await keyed_refresh_failure(stub, first.refresh_token, replay_key)

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    validation = await validate(stub, answered.access_token)
    assert (validation.active, validation.inactive_reason) == (False, "SESSION_REVOKED")


async def test_a_token_rotated_with_a_key_is_reuse_without_it_past_its_own_expiry(
    launch: Launch, clock: FrozenClock
) -> None:
    # Kept on record for the retry, the rotated token still raises the alarm for anyone else.
    launched = await launch(session_idle_timeout="10m")
    first = await register(launched.stub)
    clock.advance(timedelta(minutes=6))
    await keyed_refresh(launched.stub, first.refresh_token, new_key())
    clock.advance(timedelta(minutes=7))

    code, reason, _ = await keyed_refresh_failure(launched.stub, first.refresh_token, new_key())

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")


async def test_a_retry_after_its_successor_was_rotated_is_reuse(
    stub: Stub, clock: FrozenClock
) -> None:
    # The holder of the successor has moved on; a second holder of the old token and key
    # (say, a copy of the request) is a thief, not a retry.
    first = await register(stub)
    key = new_key()
    second = await keyed_refresh(stub, first.refresh_token, key)
    third = await keyed_refresh(stub, second.refresh_token, new_key())
    clock.advance(PAST_GRACE)

    code, reason, _ = await keyed_refresh_failure(stub, first.refresh_token, key)

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")
    validation = await validate(stub, third.access_token)
    assert (validation.active, validation.inactive_reason) == (False, "SESSION_REVOKED")


async def test_within_the_window_a_retry_after_its_successor_was_rotated_gets_the_current_token(
    stub: Stub, clock: FrozenClock
) -> None:
    # Inside the grace window the window's rule answers, key or not.
    first = await register(stub)
    key = new_key()
    second = await keyed_refresh(stub, first.refresh_token, key)
    third = await keyed_refresh(stub, second.refresh_token, new_key())
    clock.advance(WITHIN_GRACE)

    again = await keyed_refresh(stub, first.refresh_token, key)

    assert again.refresh_token == third.refresh_token


async def test_a_retry_of_a_revoked_session_is_refused_as_revoked(
    stub: Stub, clock: FrozenClock
) -> None:
    first = await register(stub)
    key = new_key()
    answered = await keyed_refresh(stub, first.refresh_token, key)
    await stub.Logout(
        pb.LogoutRequest(), metadata=(("authorization", f"Bearer {answered.access_token}"),)
    )

    code, reason, _ = await keyed_refresh_failure(stub, first.refresh_token, key)

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


@pytest.mark.parametrize(
    "key",
    ["x" * 15, "x" * 129, "é" * 16, "tab\there-0123456789", "line\nbreak-0123456789"],
    ids=["too_short", "too_long", "not_ascii", "tab", "newline"],
)
async def test_a_malformed_key_is_invalid_field_and_rotates_nothing(stub: Stub, key: str) -> None:
    first = await register(stub)

    code, reason, metadata = await keyed_refresh_failure(stub, first.refresh_token, key)

    assert (code, reason, metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        "idempotency_key",
    )
    # The token was not consumed: its next rotation is the first.
    assert (await keyed_refresh(stub, first.refresh_token, new_key())).session_id


@pytest.mark.parametrize("key", ["k" * 16, "~" * 128, "a key with spaces 1"])
async def test_any_printable_ascii_key_of_16_to_128_characters_is_accepted(
    stub: Stub, clock: FrozenClock, key: str
) -> None:
    first = await register(stub)
    answered = await keyed_refresh(stub, first.refresh_token, key)
    clock.advance(PAST_GRACE)

    again = await keyed_refresh(stub, first.refresh_token, key)

    assert again.refresh_token == answered.refresh_token
