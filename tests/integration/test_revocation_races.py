"""Refresh racing every way a session can end, across two replicas, 200 rounds.

Each round is independent: a fresh user with two sessions, the victim and a
bystander. Two Refresh calls on the victim's current token (one per replica)
and one on the bystander's race one ending of the victim's session:
RevokeSession, Logout(THIS_SESSION), Logout(ALL_SESSIONS) (which ends the
bystander too), or the replay of a spent refresh token past the grace window
(reuse detection).

The property, checked right after each round, before the next one starts:
every token pair issued in the round is refused by ValidateToken and by Refresh,
or belongs to a session that is still live, and then it still works. No
rotation that raced the end of its session leaves a usable pair behind. And
for every kind of ending both orders happened: some racing refresh rotated
before the session ended, some was refused after, so the property is not met
by one order alone.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import (
    Pair,
    Stub,
    bearer,
    error_info,
    login,
    pair_of,
    refresh,
    refresh_failure,
    register,
    validate,
)

pytestmark = pytest.mark.asyncio

ROUNDS = 200
PAST_GRACE = timedelta(seconds=11)
REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


@dataclass(frozen=True, slots=True)
class Victim:
    current: Pair  # what the racing refreshes present
    spent: Pair  # its predecessor, rotated more than the grace window ago


# Each ending checks its own answer: a session it did not end would make the
# round prove nothing.
Ending = Callable[[Stub, Victim], Awaitable[None]]


async def _revoke_session(stub: Stub, victim: Victim) -> None:
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=victim.current.session_id),
        metadata=bearer(victim.current.access_token),
    )


async def _logout(stub: Stub, victim: Victim) -> None:
    response = await stub.Logout(pb.LogoutRequest(), metadata=bearer(victim.current.access_token))
    assert response.revoked_session_count == 1


async def _logout_all(stub: Stub, victim: Victim) -> None:
    response = await stub.Logout(
        pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_ALL_SESSIONS),
        metadata=bearer(victim.current.access_token),
    )
    assert response.revoked_session_count == 2  # the victim and the bystander


async def _replay_spent_token(stub: Stub, victim: Victim) -> None:
    """Reuse detection: a rotated token, past the grace window, revokes the session."""
    assert await refresh_failure(stub, victim.spent.refresh_token) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )


ALL_SESSIONS = "Logout(ALL_SESSIONS)"
ENDINGS: dict[str, Ending] = {
    "RevokeSession": _revoke_session,
    "Logout(THIS_SESSION)": _logout,
    ALL_SESSIONS: _logout_all,
    "reuse detection": _replay_spent_token,
}
# The bystander's refresh races the ending only when the ending is ALL_SESSIONS.
ALL_SESSIONS_BYSTANDER = f"{ALL_SESSIONS}, the other session"


# Seconds a racer may wait before it starts.
STAGGERS = (0.0, 0.0, 0.002, 0.005, 0.01, 0.02)


async def _after(seconds: float, racer: Awaitable[object]) -> object:
    await asyncio.sleep(seconds)
    return await racer


async def _outcome(call: Awaitable[pb.RefreshResponse]) -> Pair | tuple[grpc.StatusCode, str]:
    """A racing Refresh's new pair, or the (code, reason) it was refused with."""
    try:
        return pair_of(await call)
    except grpc.aio.AioRpcError as error:
        return error_info(error)[:2]


async def _live_sessions(pool: Pool, session_ids: set[str]) -> set[str]:
    """Which of these sessions the database holds as live (not revoked) right now."""
    rows = await pool.fetch(
        "SELECT id::text FROM sessions WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL",
        list(session_ids),
    )
    return {row["id"] for row in rows}


async def _refused(stub: Stub, pair: Pair) -> None:
    validation = await validate(stub, pair.access_token)
    assert (validation.active, validation.inactive_reason) == (False, "SESSION_REVOKED")
    assert await refresh_failure(stub, pair.refresh_token) == REVOKED


async def _still_works(stub: Stub, pair: Pair) -> None:
    """A live session's pair: its access token validates and its refresh token
    refreshes (a rotated one answers with the successor: the grace window has not
    passed since this round's refreshes)."""
    assert (await validate(stub, pair.access_token)).active
    assert (await refresh(stub, pair.refresh_token)).session_id == pair.session_id


async def test_no_pair_survives_refreshes_racing_any_ending_across_replicas(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    first, second = await launch(), await launch()
    replicas = (first.stub, second.stub)
    chance = random.Random(7)
    # Per ending, how the racing refreshes came out: "won" (rotated before the
    # session ended) or "lost" (refused with SESSION_REVOKED).
    tally: dict[str, collections.Counter[str]] = {
        name: collections.Counter() for name in (*ENDINGS, ALL_SESSIONS_BYSTANDER)
    }

    for number in range(ROUNDS):
        name = list(ENDINGS)[number % len(ENDINGS)]
        email = f"racer-{number}@example.com"  # a fresh user: nothing carries over
        signed_in = pair_of(await register(first.stub, email))
        bystander = pair_of(await login(second.stub, email))
        victim = Victim(pair_of(await refresh(first.stub, signed_in.refresh_token)), signed_in)
        clock.advance(PAST_GRACE)  # signed_in's refresh token is now past its grace window

        a, b = chance.sample(replicas, 2)
        racers: list[Awaitable[object]] = [
            _outcome(refresh(a, victim.current.refresh_token)),
            _outcome(refresh(b, victim.current.refresh_token)),
            _outcome(refresh(a, bystander.refresh_token)),
            ENDINGS[name](b, victim),
        ]
        order = chance.sample(range(len(racers)), len(racers))  # every order of scheduling
        # And staggered starts: an ending that makes more round trips than a refresh (a
        # step-up check first) would otherwise lose every race that starts level.
        starts = [chance.choice(STAGGERS) for _ in racers]
        where = f"round {number} ({name}, racers started in order {order}, after {starts})"
        results = await asyncio.gather(*(_after(starts[i], racers[i]) for i in order))
        by_racer = dict(zip(order, results, strict=True))

        issued = [signed_in, victim.current, bystander]
        for racer in (0, 1, 2):
            outcome = by_racer[racer]
            if isinstance(outcome, Pair):
                issued.append(outcome)
            else:
                assert outcome == REVOKED, f"{where}: refresh {racer} refused with {outcome}"
            if racer < 2 or name == ALL_SESSIONS:
                kind = name if racer < 2 else ALL_SESSIONS_BYSTANDER
                tally[kind]["won" if isinstance(outcome, Pair) else "lost"] += 1

        # The round's outcome, checked before the next round moves the clock: the
        # ending ended what it should and no more, every pair of an ended session
        # is refused, and every pair of a live one still works.
        live = await _live_sessions(pool, {pair.session_id for pair in issued})
        expected_live = set() if name == ALL_SESSIONS else {bystander.session_id}
        assert live == expected_live, f"{where}: live sessions {live}"
        await asyncio.gather(
            *(
                (_still_works if pair.session_id in live else _refused)(
                    chance.choice(replicas), pair
                )
                for pair in issued
            )
        )

    # Both orders happened for every kind of ending, or the property proves little.
    for name, outcomes in tally.items():
        assert outcomes["won"] > 0, f"{name}: a refresh never won the race: {dict(tally)}"
        assert outcomes["lost"] > 0, f"{name}: a refresh never lost the race: {dict(tally)}"
