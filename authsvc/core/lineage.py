"""Refresh lineage's values: what one presentation of a refresh token got, and a session's
history of them (docs/operations.md, "Refresh lineage")."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

from authsvc.core.models import RequestOrigin, Session

__all__ = ["LineageStep", "RefreshOutcome", "ReuseDetection", "SessionLineage"]


class RefreshOutcome(enum.StrEnum):
    """What a presentation got; the value is the stored word (migration 0020)."""

    # The token was current: a successor was issued.
    ROTATED = "rotated"
    # Rotated moments ago, presented again inside the grace window: successor served again.
    GRACE_REPLAY = "grace_replay"
    # Rotated, presented again with its idempotency key: successor served again.
    IDEMPOTENT_REPLAY = "idempotent_replay"
    # Rotated, presented again outside the window: the session ended as stolen.
    REUSE_DETECTED = "reuse_detected"


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageStep:
    """One presentation of one of a session's refresh tokens. Ids only, never a token."""

    token_id: uuid.UUID
    # The token issued or served again; None when the presentation ended the session.
    successor_token_id: uuid.UUID | None
    presented_at: datetime
    # The caller's address and user agent; empty once erased.
    origin: RequestOrigin
    outcome: RefreshOutcome
    within_grace: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReuseDetection:
    """Where a rotated token came back: the presentation that rotated it first (the
    honest client's, or the thief's who came first) and the one that ended the session."""

    # None if that rotation was not recorded (lineage was off then).
    first_presentation: LineageStep | None
    replayed_presentation: LineageStep


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLineage:
    """A session and its refresh history, bounded (`truncated` when older steps were
    left out); `reuse` is always given in full when reuse was detected."""

    session: Session
    # The token issued at login: the first recorded presentation's, else the oldest token
    # on record; None if neither is left.
    initial_token_id: uuid.UUID | None
    # Oldest first: the newest steps up to the read's limit.
    steps: tuple[LineageStep, ...]
    truncated: bool
    reuse: ReuseDetection | None
