"""Tombstones: how a session ended, from its row, whether or not the sweeper marked it.

Every answer about an ended session (GetSession, a refused Refresh or call, ValidateToken's
inactive answer) comes from `end_of`, so the answer for an expired session is the same
before the sweeper marks it and after (docs/design.md, "Session tombstones").
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from authsvc.core.errors import SessionEnded, SessionExpired, SessionRevoked
from authsvc.core.models import (
    SYSTEM,
    TIMEOUTS,
    Session,
    SessionEnd,
    SessionEndReason,
)

__all__ = ["as_the_user_sees_it", "end_of", "refusal"]


def end_of(session: Session, now: datetime) -> SessionEnd | None:
    """How `session` had ended by `now`; None while it is live. An unmarked session past its
    idle deadline ended at that deadline: of its absolute deadline (ABSOLUTE_TIMEOUT) when
    the idle one had reached it (it is capped there), else of idleness (IDLE_TIMEOUT)."""
    if session.revoked_at is not None:
        return SessionEnd(
            ended_at=session.revoked_at, reason=session.end_reason, ended_by=session.ended_by
        )
    if now < session.idle_expires_at:
        return None
    reason = (
        SessionEndReason.ABSOLUTE_TIMEOUT
        if session.idle_expires_at >= session.expires_at
        else SessionEndReason.IDLE_TIMEOUT
    )
    return SessionEnd(ended_at=session.idle_expires_at, reason=reason, ended_by=SYSTEM)


def as_the_user_sees_it(end: SessionEnd) -> SessionEnd:
    """An ending as its user is shown it: an operator's ending says "an operator", not which
    (credential names are internal: a person's name, a tool's; the audit trail has them)."""
    ender = end.ended_by
    if ender is None or not ender.operator:
        return end
    return replace(end, ended_by=replace(ender, operator=""))


def refusal(end: SessionEnd) -> SessionEnded:
    """The error refusing a session that ended so: SESSION_EXPIRED for a timeout,
    SESSION_REVOKED for any other ending, each carrying the reason and the instant."""
    if end.reason in TIMEOUTS:
        return SessionExpired("session has expired", end_reason=end.reason, ended_at=end.ended_at)
    return SessionRevoked("session has been revoked", end_reason=end.reason, ended_at=end.ended_at)
