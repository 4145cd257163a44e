"""Refresh racing every way a session can end, across two replicas, 200 rounds.

The property: every token pair ever issued is refused afterwards, because its
session ended; no rotation that raced the end of its session leaves a usable
pair behind.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import (
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

ROUNDS = 200
PAST_GRACE = timedelta(seconds=11)
TokenPair = pb.LoginResponse | pb.RefreshResponse
Ending = Callable[[Stub, TokenPair, str], Awaitable[object]]


async def _revoke_session(stub: Stub, victim: TokenPair, _spent: str) -> object:
    return await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=victim.session_id), metadata=bearer(victim.access_token)
    )


async def _logout(stub: Stub, victim: TokenPair, _spent: str) -> object:
    return await stub.Logout(pb.LogoutRequest(), metadata=bearer(victim.access_token))


async def _logout_all(stub: Stub, victim: TokenPair, _spent: str) -> object:
    return await stub.Logout(
        pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_ALL_SESSIONS), metadata=bearer(victim.access_token)
    )


async def _replay_spent_token(stub: Stub, _victim: TokenPair, spent: str) -> object:
    """Reuse detection: a rotated token, past the grace window, revokes the session."""
    return await refresh_failure(stub, spent)


ENDINGS: tuple[Ending, ...] = (_revoke_session, _logout, _logout_all, _replay_spent_token)


async def _outcome(call: Awaitable[TokenPair]) -> TokenPair | grpc.aio.AioRpcError:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return error


async def test_no_pair_survives_refreshes_racing_any_ending_across_replicas(
    launch: Launch, clock: FrozenClock
) -> None:
    first, second = await launch(), await launch()
    replicas = (first.stub, second.stub)
    await register(first.stub)
    shuffle = random.Random(7)
    issued: list[TokenPair] = []
    won = lost = 0

    for number in range(ROUNDS):
        signed_in = await login(first.stub)
        victim = await refresh(first.stub, signed_in.refresh_token)  # signed_in's token is spent
        clock.advance(PAST_GRACE)
        issued += [signed_in, victim]
        ending = ENDINGS[number % len(ENDINGS)]
        a, b = shuffle.sample(replicas, 2)
        racers: list[Awaitable[object]] = [
            _outcome(refresh(a, victim.refresh_token)),
            _outcome(refresh(b, victim.refresh_token)),
            ending(b, victim, signed_in.refresh_token),
        ]
        if number % 2:
            racers.reverse()  # both orders of scheduling
        for result in await asyncio.gather(*racers):
            if isinstance(result, pb.RefreshResponse):
                issued.append(result)
                won += 1
            elif isinstance(result, grpc.aio.AioRpcError):
                assert error_info(result)[:2] == (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "SESSION_REVOKED",
                )
                lost += 1

    # Both sides of the race happened, or the property below proves little.
    assert won > 0
    assert lost > 0
    for pair in issued:
        stub = shuffle.choice(replicas)
        code, _ = await refresh_failure(stub, pair.refresh_token)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert not (await validate(stub, pair.access_token)).active
