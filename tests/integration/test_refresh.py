"""Refresh: rotation, the grace window, reuse detection and races, over a real socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch, pool_on
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

# The default refresh_grace_period is 10s.
WITHIN_GRACE = timedelta(seconds=5)
PAST_GRACE = timedelta(seconds=11)
AT_GRACE = timedelta(seconds=10)

TokenPair = pb.RegisterResponse | pb.LoginResponse | pb.RefreshResponse


async def unrotated_token_hashes(pool: Pool, session_id: str) -> list[bytes]:
    rows = await pool.fetch(
        "SELECT token_hash FROM refresh_tokens WHERE session_id = $1 AND rotated_at IS NULL",
        uuid.UUID(session_id),
    )
    return [bytes(row["token_hash"]) for row in rows]


async def revoked_at(pool: Pool, session_id: str) -> object:
    return await pool.fetchval(
        "SELECT revoked_at FROM sessions WHERE id = $1", uuid.UUID(session_id)
    )


def sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


# --- rotation -------------------------------------------------------------


async def test_refresh_returns_a_new_pair_in_the_same_session(stub: Stub) -> None:
    first = await register(stub)

    second = await refresh(stub, first.refresh_token)

    assert (second.session_id, second.user_id) == (first.session_id, first.user_id)
    assert second.token_type == "Bearer"
    assert second.refresh_token not in ("", first.refresh_token)
    assert second.access_token not in ("", first.access_token)


async def test_refreshed_token_works_for_the_next_refresh(stub: Stub) -> None:
    first = await register(stub)
    second = await refresh(stub, first.refresh_token)

    third = await refresh(stub, second.refresh_token)

    assert third.session_id == first.session_id
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)


# --- reuse detection --------------------------------------------------------


async def test_replayed_rotated_token_after_grace_is_refresh_token_reused(
    stub: Stub, clock: FrozenClock
) -> None:
    first = await register(stub)
    await refresh(stub, first.refresh_token)
    clock.advance(PAST_GRACE)

    failure = await refresh_failure(stub, first.refresh_token)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED")


async def test_replayed_rotated_token_after_grace_revokes_the_whole_session(
    stub: Stub, clock: FrozenClock
) -> None:
    first = await register(stub)
    second = await refresh(stub, first.refresh_token)
    clock.advance(PAST_GRACE)

    with pytest.raises(grpc.aio.AioRpcError):
        await refresh(stub, first.refresh_token)

    assert await refresh_failure(stub, second.refresh_token) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_REVOKED",
    )
    validation = await validate(stub, second.access_token)
    assert (validation.active, validation.inactive_reason) == (False, "SESSION_REVOKED")


# --- the grace window -------------------------------------------------------


# The window is inclusive: a replay at rotation + grace is a retry, not theft.
@pytest.mark.parametrize("after", [WITHIN_GRACE, AT_GRACE], ids=["within", "at_its_edge"])
async def test_rotated_token_within_grace_returns_the_same_successor(
    stub: Stub, clock: FrozenClock, after: timedelta
) -> None:
    first = await register(stub)
    second = await refresh(stub, first.refresh_token)
    clock.advance(after)

    again = await refresh(stub, first.refresh_token)

    assert again.refresh_token == second.refresh_token
    assert again.session_id == second.session_id
    assert (await validate(stub, again.access_token)).active


async def test_rotated_token_within_grace_keeps_the_session_live(
    stub: Stub, clock: FrozenClock, pool: Pool
) -> None:
    first = await register(stub)
    second = await refresh(stub, first.refresh_token)
    clock.advance(WITHIN_GRACE)

    again = await refresh(stub, first.refresh_token)

    assert (await validate(stub, again.access_token)).active
    assert await unrotated_token_hashes(pool, first.session_id) == [sha256(second.refresh_token)]
    third = await refresh(stub, second.refresh_token)
    assert third.session_id == first.session_id


async def test_rotated_token_within_grace_returns_the_live_head_of_the_chain(
    stub: Stub, clock: FrozenClock
) -> None:
    t0 = await register(stub)
    t1 = await refresh(stub, t0.refresh_token)
    clock.advance(timedelta(seconds=2))
    t2 = await refresh(stub, t1.refresh_token)
    clock.advance(timedelta(seconds=2))

    again = await refresh(stub, t0.refresh_token)

    assert again.refresh_token == t2.refresh_token


# --- concurrency ------------------------------------------------------------


async def test_concurrent_refreshes_of_one_token_share_one_successor(
    stub: Stub, pool: Pool
) -> None:
    first = await register(stub)

    responses = await asyncio.gather(*(refresh(stub, first.refresh_token) for _ in range(25)))

    successors = {response.refresh_token for response in responses}
    assert len(successors) == 1
    (successor,) = successors
    assert all(response.session_id == first.session_id for response in responses)
    assert await unrotated_token_hashes(pool, first.session_id) == [sha256(successor)]
    assert await revoked_at(pool, first.session_id) is None
    assert all([(await validate(stub, r.access_token)).active for r in responses])


@pytest_asyncio.fixture
async def replica_pool(pg_dsn: str) -> AsyncIterator[Pool]:
    """A second replica's own pool on the same database."""
    async with pool_on(pg_dsn, max_size=20) as replica_pool:
        yield replica_pool


@pytest_asyncio.fixture
async def replica_stub(replica_pool: Pool, launch: Launch) -> AsyncIterator[Stub]:
    """A stub on a second AuthServer with its own pool; stopped before the pool closes."""
    replica = await launch(server_pool=replica_pool)
    yield replica.stub
    await replica.server.stop(None)


async def test_concurrent_refreshes_through_two_replicas_share_one_chain(
    replica_stub: Stub, stub: Stub, pool: Pool
) -> None:
    first = await register(stub)

    responses = await asyncio.gather(
        *(refresh(s, first.refresh_token) for _ in range(12) for s in (stub, replica_stub))
    )

    successors = {response.refresh_token for response in responses}
    assert len(successors) == 1
    (successor,) = successors
    assert await unrotated_token_hashes(pool, first.session_id) == [sha256(successor)]
    assert await revoked_at(pool, first.session_id) is None
    assert (await validate(replica_stub, responses[-1].access_token)).active


# --- bad tokens -------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [secrets.token_urlsafe(32), "abc"],
    ids=["unknown", "malformed"],
)
async def test_refresh_with_a_token_we_never_issued_is_refresh_token_invalid(
    stub: Stub, token: str
) -> None:
    await register(stub)

    failure = await refresh_failure(stub, token)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")


async def test_refresh_without_a_token_names_the_field(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refresh(stub, "")

    assert error_info(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "refresh_token"},
    )


# --- storage ----------------------------------------------------------------


async def _issued_refresh_tokens(stub: Stub) -> list[str]:
    """A session with a rotated token, a grace answer and a live token."""
    first = await register(stub)
    second = await refresh(stub, first.refresh_token)
    await refresh(stub, first.refresh_token)
    third = await refresh(stub, second.refresh_token)
    return [first.refresh_token, second.refresh_token, third.refresh_token]


async def test_refresh_token_plaintext_is_never_stored(stub: Stub, pool: Pool) -> None:
    tokens = await _issued_refresh_tokens(stub)

    rows = [
        *await pool.fetch("SELECT * FROM refresh_tokens"),
        *await pool.fetch("SELECT * FROM sessions"),
    ]

    assert len(rows) == 4  # three tokens and their session
    for token in tokens:
        # The prefix is the user's id, stored as such; the secret after it never is.
        secret = token.split(".")[1]
        raw = base64.urlsafe_b64decode(secret + "=")
        forms = (token.encode("ascii"), secret.encode("ascii"), raw, raw.hex().encode("ascii"))
        for row in rows:
            for value in row.values():
                text = str(value)
                assert token not in text
                assert secret not in text
                assert raw.hex() not in text
                if isinstance(value, bytes):
                    assert not any(form in value for form in forms)


async def test_stored_token_hash_is_the_sha256_of_the_token(stub: Stub, pool: Pool) -> None:
    tokens = await _issued_refresh_tokens(stub)

    stored = await pool.fetch("SELECT token_hash FROM refresh_tokens")

    assert sorted(bytes(row["token_hash"]) for row in stored) == sorted(map(sha256, tokens))


# --- revocation -------------------------------------------------------------


async def test_refresh_after_logout_is_session_revoked(stub: Stub) -> None:
    first = await register(stub)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(first.access_token))

    failure = await refresh_failure(stub, first.refresh_token)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


async def test_refresh_after_revoke_session_is_session_revoked(stub: Stub) -> None:
    other = await register(stub)
    target = await login(stub)
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=target.session_id), metadata=bearer(other.access_token)
    )

    failure = await refresh_failure(stub, target.refresh_token)

    assert failure == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


async def _revoke(stub: Stub, round_number: int, victim: pb.LoginResponse) -> None:
    """One of the three ways a session ends, chosen by round."""
    way = round_number % 3
    if way == 0:
        await stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=victim.session_id),
            metadata=bearer(victim.access_token),
        )
    elif way == 1:
        await stub.Logout(pb.LogoutRequest(), metadata=bearer(victim.access_token))
    else:
        await stub.Logout(pb.LogoutRequest(refresh_token=victim.refresh_token))


async def _refresh_outcome(
    stub: Stub, refresh_token: str
) -> pb.RefreshResponse | grpc.aio.AioRpcError:
    try:
        return await refresh(stub, refresh_token)
    except grpc.aio.AioRpcError as error:
        return error


async def test_no_token_survives_a_refresh_racing_a_revocation(stub: Stub) -> None:
    await register(stub)
    issued: list[TokenPair] = []

    for round_number in range(30):
        victim = await login(stub)
        issued.append(victim)
        *outcomes, _ = await asyncio.gather(
            _refresh_outcome(stub, victim.refresh_token),
            _refresh_outcome(stub, victim.refresh_token),
            _revoke(stub, round_number, victim),
        )
        for outcome in outcomes:
            if isinstance(outcome, pb.RefreshResponse):
                issued.append(outcome)
            else:
                assert error_info(outcome)[:2] == (
                    grpc.StatusCode.UNAUTHENTICATED,
                    "SESSION_REVOKED",
                )

    for pair in issued:
        code, _ = await refresh_failure(stub, pair.refresh_token)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert not (await validate(stub, pair.access_token)).active
