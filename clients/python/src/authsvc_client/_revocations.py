"""The revocation feed as a subscribed TokenVerifier follows it: a deny-list of ended
sessions, kept by WatchRevocations and resumed from its cursor across reconnects."""

from __future__ import annotations

import asyncio
import enum
import heapq
import logging
import math
import random
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from authsvc_client._errors import AuthsvcError, CursorExpired, InvalidArgument, RateLimited
from authsvc_client._models import FeedEvent, Heartbeat

__all__ = ["DEFAULT_STALE_AFTER", "RevocationSource", "RevocationWatch", "WhenStale"]

_log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER = timedelta(seconds=5)
# Reconnect delays, doubled per failure: short enough that a restarted server is followed
# again well inside the default staleness.
_FIRST_RETRY_S = 0.1
_LAST_RETRY_S = 2.0


class WhenStale(enum.Enum):
    """What a subscribed TokenVerifier does with a token while its feed is stale (silent
    for `stale_after`, or not yet caught up): it never trusts its deny-list then."""

    VALIDATE_ONLINE = "validate_online"
    """Ask ValidateToken, one RPC per token, until the feed is current again."""
    REFUSE = "refuse"
    """Raise RevocationFeedStale (UNAVAILABLE): no token passes."""


@runtime_checkable
class RevocationSource(Protocol):
    """Where the feed comes from: an AuthClient built with a service key."""

    def watch_revocations(self, *, after_cursor: int = 0) -> AsyncGenerator[FeedEvent, None]: ...


def _retry_delay(failures: int) -> float:
    """Exponential backoff with jitter, so subscribers cut off together do not return together."""
    ceiling = min(_LAST_RETRY_S, math.ldexp(_FIRST_RETRY_S, min(failures, 16)))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 (spreading retries, not a secret)


def _must_restart(error: AuthsvcError) -> bool:
    """The refusals that are not "resume from my cursor": the log no longer reaches back to
    it (CURSOR_EXPIRED), or never reached it (a cursor beyond the latest: a new database)."""
    return isinstance(error, CursorExpired) or (
        isinstance(error, InvalidArgument) and error.field == "after_cursor"
    )


class RevocationWatch:
    """Follows WatchRevocations in a background task it owns (`start`, `aclose`).

    `denied` maps each ended session to the instant after which its entry is dropped: the
    feed's `tokens_expire_by` plus the verifier's `leeway`, since the verifier accepts a
    token until its `exp` plus leeway. It is current while the last message of a caught-up
    stream (one that has sent its first heartbeat) is less than `stale_after` old; before
    the first heartbeat, and after CURSOR_EXPIRED until the new snapshot's, it is not.
    """

    def __init__(
        self,
        source: RevocationSource,
        *,
        stale_after: timedelta,
        leeway: timedelta,
        now: Callable[[], datetime],
    ) -> None:
        if stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        self.denied: dict[uuid.UUID, datetime] = {}
        self.cursor = 0
        self._source = source
        self._stale_after = stale_after.total_seconds()
        self._leeway = leeway
        self._now = now
        self._expiries: list[tuple[datetime, uuid.UUID]] = []
        self._heard_at: float | None = None  # time.monotonic() of the last in-sync message
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def is_current(self) -> bool:
        heard = self._heard_at
        return heard is not None and time.monotonic() - heard < self._stale_after

    def start(self) -> None:
        """Start following the feed (idempotent). Needs a running event loop."""
        if self._closed:
            raise RuntimeError("this verifier was closed; build a new one")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="authsvc-revocation-feed")

    async def aclose(self) -> None:
        """Stop following the feed and wait for the task to end (idempotent)."""
        self._closed = True
        self._heard_at = None
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})

    async def _run(self) -> None:
        while True:
            retry_after = 0.0
            try:
                await self._follow()
                failure = "the stream ended"
            except TimeoutError:
                failure = f"no message for {self._stale_after:g} s"
            except AuthsvcError as exc:
                failure = str(exc)
                if _must_restart(exc):
                    # Not current until a new snapshot's heartbeat; the deny-list stays, since
                    # an ended session never comes back.
                    _log.warning(
                        "revocation feed cannot resume after cursor %d (%s); starting again "
                        "from a snapshot",
                        self.cursor,
                        exc.reason,
                        extra={"event": "revocation_feed_restarted", "cursor": self.cursor},
                    )
                    self.cursor = 0
                    self._heard_at = None
                if isinstance(exc, RateLimited) and exc.retry_delay is not None:
                    # SERVER_BUSY (too many subscribers) says when to come back.
                    retry_after = exc.retry_delay.total_seconds()
            except Exception:
                _log.exception(
                    "revocation feed failed; reconnecting", extra={"event": "revocation_feed_error"}
                )
                failure = "an unexpected error"
            delay = max(_retry_delay(self._failures), retry_after)
            # One warning per outage; the retries that follow are DEBUG.
            _log.log(
                logging.WARNING if self._failures == 0 else logging.DEBUG,
                "revocation feed interrupted (%s); resuming after cursor %d in %.2f s",
                failure,
                self.cursor,
                delay,
                extra={"event": "revocation_feed_interrupted", "cursor": self.cursor},
            )
            self._failures += 1
            await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """One stream, until it ends, fails or stays silent for `stale_after`."""
        stream = self._source.watch_revocations(after_cursor=self.cursor)
        caught_up = False  # until this stream's first heartbeat, it is replaying
        try:
            while True:
                async with asyncio.timeout(self._stale_after):
                    event = await anext(stream, None)
                if event is None:
                    return
                self.cursor = max(self.cursor, event.cursor)
                if isinstance(event, Heartbeat):
                    if not caught_up and not self.is_current():
                        _log.info(
                            "revocation feed is current",
                            extra={
                                "event": "revocation_feed_current",
                                "cursor": self.cursor,
                                "denied": len(self.denied),
                            },
                        )
                    caught_up = True
                    self._failures = 0
                else:
                    self._deny(event.session_id, event.tokens_expire_by + self._leeway)
                self._drop_expired()
                if caught_up:
                    self._heard_at = time.monotonic()
        finally:
            await stream.aclose()

    def _deny(self, session_id: uuid.UUID, until: datetime) -> None:
        known = self.denied.get(session_id)
        if known is None or known < until:
            self.denied[session_id] = until
            heapq.heappush(self._expiries, (until, session_id))

    def _drop_expired(self) -> None:
        now = self._now()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            until, session_id = heapq.heappop(expiries)
            if self.denied.get(session_id) == until:
                del self.denied[session_id]
