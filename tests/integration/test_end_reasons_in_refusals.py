"""Every refusal because a session ended says why and when: Refresh, an authenticated call
(whether the liveness cache or the database answers) and ValidateToken's inactive answer,
for a revoked and for an expired session, on a real server and database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.core.models import SessionId, UserId
from authsvc.domain.liveness import Liveness
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import READY_TIMEOUT, Launch, NewDatabase
from tests.helpers import (
    PASSWORD,
    Stub,
    Tokens,
    bearer,
    error_info,
    login,
    refresh,
    register,
    validate,
)
from tests.processes import eventually

pytestmark = pytest.mark.asyncio

NEW_PASSWORD = "a brand new passphrase"
# An access-token TTL beyond the idle timeout: each token is capped at its session's deadline.
IDLE: dict[str, Any] = {"session_idle_timeout": "1h", "access_token_ttl": "2h"}

Refusal = tuple[grpc.StatusCode, str, dict[str, str]]


def refused_as(reason: str, end_reason: str, ended_at: datetime) -> Refusal:
    return (
        grpc.StatusCode.UNAUTHENTICATED,
        reason,
        {
            "end_reason": f"SESSION_END_REASON_{end_reason}",
            "ended_at": ended_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        },
    )


async def refusal(call: Any) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_info(caught.value)


def listing(stub: Stub, session: Tokens) -> Any:
    return stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(session.access_token))


async def change_password_elsewhere(stub: Stub) -> tuple[Tokens, Tokens]:
    """(a session the user's password change on another ended, that other session)."""
    ended, caller = await register(stub), await login(stub)
    await stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(caller.access_token),
    )
    return ended, caller


async def unend_in_the_database(pool: Pool, session: Tokens) -> None:
    """Make the row say live again, so that only a cache can still answer 'ended'."""
    await pool.execute(
        "UPDATE sessions SET revoked_at = NULL, end_reason = NULL, ended_by_kind = NULL,"
        " ended_by_session = NULL WHERE id = $1",
        uuid.UUID(session.session_id),
    )


def idle_deadline(session: Tokens) -> datetime:
    deadline: datetime = session.refresh_token_expires_at.ToDatetime(tzinfo=UTC)
    return deadline


# --- Refresh ------------------------------------------------------------------


async def test_refresh_of_a_session_ended_by_a_password_change_says_so(
    stub: Stub, clock: FrozenClock
) -> None:
    ended, _ = await change_password_elsewhere(stub)

    refused = await refusal(refresh(stub, ended.refresh_token))

    assert refused == refused_as("SESSION_REVOKED", "PASSWORD_CHANGED", clock.now())


async def test_refresh_of_an_idle_expired_session_says_so_after_the_sweeper_marked_it(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(**IDLE)
    session = await register(launched.stub)
    clock.advance(timedelta(days=1))
    await launched.server.sweeper.run_once()

    refused = await refusal(refresh(launched.stub, session.refresh_token))

    assert refused == refused_as("SESSION_EXPIRED", "IDLE_TIMEOUT", idle_deadline(session))


async def test_a_replayed_refresh_token_says_the_session_ended_for_reuse_now(
    stub: Stub, clock: FrozenClock
) -> None:
    session = await register(stub)
    await refresh(stub, session.refresh_token)
    clock.advance(timedelta(minutes=1))

    refused = await refusal(refresh(stub, session.refresh_token))

    assert refused == refused_as("REFRESH_TOKEN_REUSED", "REFRESH_TOKEN_REUSE", clock.now())


# --- an authenticated call ----------------------------------------------------


async def test_a_call_refused_from_the_liveness_cache_carries_the_reason(
    server: AuthServer, stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    assert server.liveness is not None
    ended, _ = await change_password_elsewhere(stub)
    # Only the cache (told by the ending itself, in this process) still knows.
    await unend_in_the_database(pool, ended)

    refused = await refusal(listing(stub, ended))

    assert refused == refused_as("SESSION_REVOKED", "PASSWORD_CHANGED", clock.now())


async def test_a_replicas_cache_learns_the_reason_from_the_feed(
    launch: Launch, pool: Pool, clock: FrozenClock
) -> None:
    ending, other = await launch(), await launch()
    ended, _ = await change_password_elsewhere(ending.stub)
    assert other.server.liveness is not None
    liveness = other.server.liveness

    async def heard() -> bool:
        return liveness.check(_sid(ended), _uid(ended)) is Liveness.REVOKED

    await eventually(heard)
    await unend_in_the_database(pool, ended)

    refused = await refusal(listing(other.stub, ended))

    assert refused == refused_as("SESSION_REVOKED", "PASSWORD_CHANGED", clock.now())


async def test_a_call_refused_from_the_database_carries_the_reason(
    launch: Launch, new_database: NewDatabase, pool: Pool, clock: FrozenClock
) -> None:
    # Its feed listens to a quiet database: it hears nothing of the server's endings.
    launched = await launch(
        listen_database_url=await new_database(migrated=True), revocation_feed_staleness="1h"
    )
    assert launched.server.revocation_feed is not None
    async with asyncio.timeout(READY_TIMEOUT):
        await launched.server.revocation_feed.wait_current()
    session = await register(launched.stub)
    await pool.execute(
        "UPDATE sessions SET revoked_at = $2, revoke_reason = 'elsewhere',"
        " end_reason = 'admin_revoked', ended_by_kind = 'operator', ended_by_operator = 'ops'"
        " WHERE id = $1",
        uuid.UUID(session.session_id),
        clock.now(),
    )

    refused = await refusal(listing(launched.stub, session))

    assert refused == refused_as("SESSION_REVOKED", "ADMIN_REVOKED", clock.now())


async def test_a_call_with_the_capped_token_of_an_expired_session_says_it_expired_when(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(**IDLE)
    session = await register(launched.stub)
    clock.advance(timedelta(minutes=61))

    refused = await refusal(listing(launched.stub, session))

    assert refused == refused_as("SESSION_EXPIRED", "IDLE_TIMEOUT", idle_deadline(session))


# --- ValidateToken ------------------------------------------------------------


async def test_validate_token_of_a_revoked_session_answers_why_and_when(
    stub: Stub, clock: FrozenClock
) -> None:
    ended, _ = await change_password_elsewhere(stub)

    answer = await validate(stub, ended.access_token)

    assert (answer.active, answer.inactive_reason, answer.end_reason) == (
        False,
        "SESSION_REVOKED",
        pb.SESSION_END_REASON_PASSWORD_CHANGED,
    )
    assert answer.ended_at.ToDatetime(tzinfo=UTC) == clock.now()


async def test_validate_token_of_an_expired_session_answers_why_and_when(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(**IDLE)
    session = await register(launched.stub)
    clock.advance(timedelta(minutes=61))

    answer = await validate(launched.stub, session.access_token)

    assert (answer.active, answer.inactive_reason, answer.end_reason) == (
        False,
        "SESSION_EXPIRED",
        pb.SESSION_END_REASON_IDLE_TIMEOUT,
    )
    assert answer.ended_at.ToDatetime(tzinfo=UTC) == idle_deadline(session)


async def test_validate_token_of_a_live_session_has_no_end(stub: Stub) -> None:
    session = await register(stub)

    answer = await validate(stub, session.access_token)

    assert (answer.active, answer.end_reason, answer.HasField("ended_at")) == (
        True,
        pb.SESSION_END_REASON_UNSPECIFIED,
        False,
    )


def _sid(session: Tokens) -> SessionId:
    return SessionId(uuid.UUID(session.session_id))


def _uid(session: Tokens) -> UserId:
    return UserId(uuid.UUID(session.user_id))
