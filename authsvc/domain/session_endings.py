"""Where every committed ending of a session is applied in this process, once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from authsvc.core.models import EndedSession, SessionEndReason, UserId
from authsvc.domain.liveness import LivenessCache
from authsvc.telemetry import metrics

__all__ = ["SessionEndings"]

_log = logging.getLogger("authsvc.domain.sessions")


class SessionEndings:
    """Shared by every use case that ends sessions (sessions, factors, resets, erasure)."""

    def __init__(self, liveness: LivenessCache | None) -> None:
        """`liveness`: where the process keeps recent revocations; None if it keeps none."""
        self._liveness = liveness

    def ended(self, ended: Sequence[EndedSession], now: datetime, reason: SessionEndReason) -> None:
        """Read your writes: this process refuses the sessions it ended before it answers,
        whatever its feed has heard. And each is counted, by `reason`, with how long it
        lived."""
        if not ended:
            return
        if self._liveness is not None:
            self._liveness.ended_here((session.id for session in ended), now, reason)
        for session in ended:
            metrics.session_ended(reason.value, (now - session.created_at).total_seconds())

    def user_sessions_ended(
        self, user_id: UserId, ended: list[EndedSession], reason: SessionEndReason, now: datetime
    ) -> None:
        """The user's sessions a use case ended with `end_user_sessions`' statement inside
        its own transaction, now committed: applied and logged."""
        self.ended(ended, now, reason)
        _log.info(
            "user sessions ended",
            extra={
                "event": "user_sessions_ended",
                "user_id": str(user_id),
                "reason": reason.value,
                "revoked": len(ended),
            },
        )
