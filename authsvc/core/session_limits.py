"""Per-user session limits: the policy's names and what the store enforces at a login."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from authsvc.core.models import AuditEvent

__all__ = ["SessionCap", "SessionLimitPolicy"]


class SessionLimitPolicy(enum.Enum):
    """What a login does when the user already has as many live sessions as the limit."""

    # End the least recently active live sessions, so the new one fits.
    EVICT_OLDEST = "evict_oldest"
    # Refuse the login (SessionLimitReached).
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCap:
    """The limit one session start must respect: at most `limit` (>= 1) live sessions of
    the user once the new one is in, by `policy`. An eviction is stored with
    `revoke_reason` and recorded as `event`, one copy per evicted session, stamped with it."""

    limit: int
    policy: SessionLimitPolicy
    revoke_reason: str
    event: AuditEvent
