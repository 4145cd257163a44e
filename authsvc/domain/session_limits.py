"""The per-user session limit (AUTHSVC_SESSION_LIMIT): what a session start asks the store
to enforce, and what a refusal records. The store enforces it in the login's transaction
with the user's row locked, so concurrent logins on any replica cannot both squeeze in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from authsvc.core.models import AuditEvent, RequestOrigin, SessionId, UserId
from authsvc.core.session_limits import SessionCap, SessionLimitPolicy

__all__ = ["EVICTED_EVENT", "SessionLimit"]

# The audit event of each session a limit evicts, stamped with it.
EVICTED_EVENT = "session_evicted"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLimit:
    """At most `max_live` live sessions per user (0: no limit; 1: single-session mode),
    and what a login beyond it does."""

    max_live: int = 0
    policy: SessionLimitPolicy = SessionLimitPolicy.EVICT_OLDEST

    def cap(
        self, new_session: SessionId, origin: RequestOrigin, now: datetime
    ) -> SessionCap | None:
        """What the store enforces as `new_session` starts; None with no limit, so that
        path takes no lock and counts nothing."""
        if self.max_live == 0:
            return None
        return SessionCap(
            limit=self.max_live,
            policy=self.policy,
            revoke_reason=f"session_limit_evicted: limit {self.max_live}",
            event=AuditEvent(
                event=EVICTED_EVENT,
                occurred_at=now,
                origin=origin,
                detail={"by_session_id": str(new_session), "session_limit": self.max_live},
            ),
        )

    def refusal(self, user_id: UserId, origin: RequestOrigin, now: datetime) -> AuditEvent:
        """The audit event of a login the limit refused: the only thing it writes."""
        return AuditEvent(
            event="login_failed",
            occurred_at=now,
            user_id=user_id,
            origin=origin,
            detail={"reason": "session_limit_reached", "session_limit": self.max_live},
        )
