"""Which live sessions AdminService.RevokeSessions selects, and what its dry run shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from authsvc.core.models import DeviceType, ListedSession, UserId

__all__ = ["SampledSession", "SessionFilter"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFilter:
    """A selection of live sessions: the fields set combine with AND, a tuple matches any
    of its values, and an empty field is off. Only sessions created at or before the
    call's start match, so a run ends what existed when it began and always finishes."""

    user_ids: tuple[UserId, ...] = ()
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    # A network in its canonical text ("203.0.113.0/24"); the login address within it.
    ip_cidr: str = ""
    # Case-insensitive; every character literal (no wildcards).
    user_agent_contains: str = ""
    device_types: tuple[DeviceType, ...] = ()
    # The `kid` of the session's latest access token.
    signing_key_id: str = ""
    # Every live session; required when no other field is set.
    match_all: bool = False

    @property
    def is_empty(self) -> bool:
        """Whether no field narrows the selection."""
        return not (
            self.user_ids
            or self.created_after is not None
            or self.created_before is not None
            or self.ip_cidr
            or self.user_agent_contains
            or self.device_types
            or self.signing_key_id
        )


class SampledSession(NamedTuple):
    """One session of a dry run's sample, with its user."""

    user_id: UserId
    session: ListedSession
