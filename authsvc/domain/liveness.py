"""The process's liveness cache: which sessions ended recently enough to matter.

An access token's `exp` is capped at its session's deadlines (less the clock skew), so an
access token the server accepts belongs to a session that has not expired; what remains to
know is whether the session exists, is its user's, and was revoked. The first two never
change: the cache remembers them from the first database check of each session. Every
revocation reaches it through the feed (or, for one this process made, directly), and it
keeps each for as long as one of the session's tokens may still be accepted. While the feed
is current a known session needs no database read; while it is not, the answer is "ask the
database". See docs/design.md, "The liveness cache".
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from authsvc.core.clock import Clock
from authsvc.core.models import SessionEnd, SessionEndReason, SessionId, UserId
from authsvc.domain.revocations import RevocationBatch, RevocationFeed

__all__ = ["Liveness", "LivenessCache"]

# Sessions whose owner is remembered, most recently checked last: a replica's working set of
# sessions with tokens in use (each entry is two UUIDs).
_KNOWN_SESSIONS = 200_000


class Liveness(enum.Enum):
    LIVE = "live"
    REVOKED = "revoked"
    # The token names a session of another user: only a holder of a signing key makes one.
    WRONG_USER = "wrong_user"
    # Ask the database: the feed is not current, or the session was never checked here.
    UNKNOWN = "unknown"


class LivenessCache:
    """Sessions ended within `window` (how long after its session ends a token may still be
    accepted), from `feed`. A FeedObserver: observe it with `feed.observe(cache)`."""

    __slots__ = ("_clock", "_ended", "_feed", "_order", "_owners", "_window")

    def __init__(self, feed: RevocationFeed, clock: Clock, *, window: timedelta) -> None:
        self._feed = feed
        self._clock = clock
        self._window = window
        # Session -> how it ended (when and why: a refusal says both without a database
        # read); `_order` holds when, in arrival order, for pruning.
        self._ended: dict[SessionId, SessionEnd] = {}
        self._order: deque[tuple[datetime, SessionId]] = deque()
        self._owners: OrderedDict[SessionId, UserId] = OrderedDict()

    def check(self, session_id: SessionId, user_id: UserId) -> Liveness:
        """Whether the session of an unexpired token is live, as far as the cache can say
        without the database."""
        if not self._feed.is_current:
            return Liveness.UNKNOWN
        if session_id in self._ended:
            return Liveness.REVOKED
        owner = self._owners.get(session_id)
        if owner is None:
            return Liveness.UNKNOWN
        self._owners.move_to_end(session_id)
        return Liveness.LIVE if owner == user_id else Liveness.WRONG_USER

    def end_of(self, session_id: SessionId) -> SessionEnd:
        """How a session `check` answered REVOKED for ended: when and why (not by whom:
        the feed does not say)."""
        return self._ended[session_id]

    def checked_live(self, session_id: SessionId, user_id: UserId) -> None:
        """The database found the session live and the user's: it stays the user's, and
        only a revocation (which the feed brings) can end it before its tokens expire."""
        self._owners[session_id] = user_id
        self._owners.move_to_end(session_id)
        if len(self._owners) > _KNOWN_SESSIONS:
            self._owners.popitem(last=False)

    def applied(self, batch: RevocationBatch) -> None:
        self._add((entry.session_id, entry.revoked_at, entry.reason) for entry in batch.revocations)

    def currency_changed(self, current: bool) -> None:
        """Nothing to do: `is_revoked` asks the feed itself."""

    def ended_here(
        self, session_ids: Iterable[SessionId], ended_at: datetime, reason: SessionEndReason
    ) -> None:
        """Sessions this process has just ended (committed) for `reason`: known at once,
        before the caller is answered, so this replica never accepts a token it has just
        revoked."""
        self._add((session_id, ended_at, reason) for session_id in session_ids)

    def _add(self, ended: Iterable[tuple[SessionId, datetime, SessionEndReason]]) -> None:
        for session_id, ended_at, reason in ended:
            if session_id not in self._ended:
                self._ended[session_id] = SessionEnd(
                    ended_at=ended_at, reason=reason, ended_by=None
                )
                self._order.append((ended_at, session_id))
        self._prune()

    def _prune(self) -> None:
        """Forget sessions whose every token is past accepting. Arrival order is nearly
        time order; an entry stuck behind a younger one only waits longer."""
        horizon = self._clock.now() - self._window
        order = self._order
        while order and order[0][0] < horizon:
            _, session_id = order.popleft()
            self._ended.pop(session_id, None)
