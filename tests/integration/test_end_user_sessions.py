"""SessionService.end_user_sessions, the one way every account-level ending (an operator's
revocation, disabling, a password change or reset, a deletion) ends a user's sessions:
through the revocation feed with its reason, audited once in the same transaction."""

from __future__ import annotations

import uuid

import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.core.models import SYSTEM, RequestOrigin, SessionEndReason, SessionId, UserId
from authsvc.store.pool import Pool
from authsvc.store.revocations import PgRevocationLog
from tests.helpers import Stub, Tokens, listed_ids, sign_in, validate

pytestmark = pytest.mark.asyncio

OPERATOR = RequestOrigin(ip_address="192.0.2.7", user_agent="authsvc-admin")


def user_of(session: Tokens) -> UserId:
    return UserId(uuid.UUID(session.user_id))


@pytest.mark.parametrize(
    "reason",
    [
        SessionEndReason.ADMIN_REVOKED,
        SessionEndReason.USER_DISABLED,
        SessionEndReason.PASSWORD_CHANGED,
        SessionEndReason.PASSWORD_RESET,
        SessionEndReason.USER_DELETED,
    ],
    ids=lambda reason: reason.value,
)
async def test_ending_a_users_sessions_logs_each_for_the_feed_with_its_reason(
    server: AuthServer, stub: Stub, pool: Pool, reason: SessionEndReason
) -> None:
    sessions = await sign_in(stub, 2)
    (other,) = await sign_in(stub, 1, email="bob@example.com")

    count = await server.sessions.end_user_sessions(
        user_of(sessions[0]), reason, ender=SYSTEM, audit_event="test_ended", origin=OPERATOR
    )

    logged = await PgRevocationLog(pool).read_after(0, limit=100)
    assert count == 2
    assert sorted((str(entry.session_id), entry.reason) for entry in logged) == sorted(
        (session.session_id, reason) for session in sessions
    )
    assert (await validate(stub, other.access_token)).active


async def test_the_kept_session_stays_live_and_the_others_are_refused_at_once(
    server: AuthServer, stub: Stub
) -> None:
    kept, *others = await sign_in(stub, 3)

    count = await server.sessions.end_user_sessions(
        user_of(kept),
        SessionEndReason.PASSWORD_CHANGED,
        ender=SYSTEM,
        audit_event="test_ended",
        origin=OPERATOR,
        keep=SessionId(uuid.UUID(kept.session_id)),
    )

    assert count == 2
    assert await listed_ids(stub, kept.access_token) == {kept.session_id}
    for session in others:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await listed_ids(stub, session.access_token)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_one_audit_event_names_what_it_ended_even_when_nothing_was_live(
    server: AuthServer, stub: Stub, pool: Pool
) -> None:
    sessions = await sign_in(stub, 2)
    user_id = user_of(sessions[0])
    service = server.sessions

    first = await service.end_user_sessions(
        user_id,
        SessionEndReason.ADMIN_REVOKED,
        ender=SYSTEM,
        audit_event="test_ended",
        origin=OPERATOR,
        detail={"operator": "ops"},
        note="support ticket 7",
    )
    again = await service.end_user_sessions(
        user_id,
        SessionEndReason.ADMIN_REVOKED,
        ender=SYSTEM,
        audit_event="test_ended",
        origin=OPERATOR,
    )

    rows = await pool.fetch(
        "SELECT user_id, ip_address, user_agent, detail FROM audit_events"
        " WHERE event = 'test_ended' ORDER BY id"
    )
    assert (first, again) == (2, 0)
    assert [(row["user_id"], row["ip_address"], row["user_agent"]) for row in rows] == [
        (user_id, OPERATOR.ip_address, OPERATOR.user_agent)
    ] * 2
    assert rows[0]["detail"]["operator"] == "ops"
    assert rows[0]["detail"]["revoked_session_count"] == 2
    assert sorted(rows[0]["detail"]["revoked_session_ids"]) == sorted(
        s.session_id for s in sessions
    )
    assert rows[1]["detail"] == {"revoked_session_count": 0, "revoked_session_ids": []}
    reasons = await pool.fetch("SELECT DISTINCT revoke_reason FROM sessions")
    assert [row["revoke_reason"] for row in reasons] == ["admin_revoked: support ticket 7"]
