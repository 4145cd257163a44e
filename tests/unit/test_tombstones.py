"""How a session ended, from its row alone (domain/tombstones.py): the one answer every
RPC gives, whether or not the sweeper has marked the session."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from authsvc.core.errors import SessionExpired, SessionRevoked
from authsvc.core.models import (
    SYSTEM,
    DeviceInfo,
    DeviceType,
    Session,
    SessionEnd,
    SessionEnder,
    SessionEnderKind,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.domain.tombstones import as_the_user_sees_it, end_of, refusal

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def session(*, idle_expires_at: datetime, expires_at: datetime) -> Session:
    return Session(
        id=SessionId(uuid.uuid4()),
        user_id=UserId(uuid.uuid4()),
        created_at=T0,
        last_active_at=T0,
        idle_expires_at=idle_expires_at,
        expires_at=expires_at,
        remember_me=False,
        device=DeviceInfo(
            user_agent="",
            ip_address="",
            device_type=DeviceType.OTHER,
            browser="",
            os="",
            device_name="",
        ),
        revoked_at=None,
        revoke_reason=None,
    )


def test_a_session_before_its_idle_deadline_has_not_ended() -> None:
    assert end_of(session(idle_expires_at=T0 + HOUR, expires_at=T0 + 2 * HOUR), T0) is None


def test_an_unmarked_session_past_its_idle_deadline_ended_then_of_idleness() -> None:
    idle = session(idle_expires_at=T0 + HOUR, expires_at=T0 + 2 * HOUR)

    assert end_of(idle, T0 + HOUR) == SessionEnd(
        ended_at=T0 + HOUR, reason=SessionEndReason.IDLE_TIMEOUT, ended_by=SYSTEM
    )


def test_an_idle_deadline_capped_at_the_lifetime_is_an_absolute_timeout() -> None:
    capped = session(idle_expires_at=T0 + 2 * HOUR, expires_at=T0 + 2 * HOUR)

    end = end_of(capped, T0 + 3 * HOUR)

    assert end is not None
    assert (end.ended_at, end.reason) == (T0 + 2 * HOUR, SessionEndReason.ABSOLUTE_TIMEOUT)


def test_a_marked_session_answers_from_its_row() -> None:
    ender = SessionEnder.by_operator("oncall")
    ended = replace(
        session(idle_expires_at=T0 + HOUR, expires_at=T0 + HOUR),
        revoked_at=T0,
        end_reason=SessionEndReason.ADMIN_REVOKED,
        ended_by=ender,
    )

    assert end_of(ended, T0 + 2 * HOUR) == SessionEnd(
        ended_at=T0, reason=SessionEndReason.ADMIN_REVOKED, ended_by=ender
    )


def test_a_timeout_is_refused_as_expired_and_any_other_ending_as_revoked() -> None:
    expired = refusal(
        SessionEnd(ended_at=T0, reason=SessionEndReason.IDLE_TIMEOUT, ended_by=SYSTEM)
    )
    revoked = refusal(SessionEnd(ended_at=T0, reason=SessionEndReason.USER_LOGOUT, ended_by=None))

    assert isinstance(expired, SessionExpired)
    assert isinstance(revoked, SessionRevoked)
    assert (revoked.end_reason, revoked.ended_at) == (SessionEndReason.USER_LOGOUT, T0)


def test_the_user_is_told_an_operator_ended_it_but_not_which() -> None:
    end = SessionEnd(
        ended_at=T0,
        reason=SessionEndReason.ADMIN_REVOKED,
        ended_by=SessionEnder.by_operator("oncall-ada"),
    )

    shown = as_the_user_sees_it(end)

    assert shown.ended_by == SessionEnder(kind=SessionEnderKind.OPERATOR)
    assert (shown.ended_at, shown.reason) == (T0, SessionEndReason.ADMIN_REVOKED)
