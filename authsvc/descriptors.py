"""The process's file descriptors: its limit, and a watch on how many are open.

Every client connection holds a descriptor. When they run out, gRPC's C core
cannot accept() (EMFILE): new connections wait in the kernel's listen backlog
until they time out, and the core says nothing that Python's logging sees. The
open count is what we can see, so `DescriptorWatch` looks at it every second
and says when it nears or reaches the limit (see docs/operations.md, "Connections
and file descriptors").
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import time
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["DescriptorWatch", "OpenFilesLimit", "raise_open_files_limit"]

_log = logging.getLogger(__name__)

_FD_DIR = "/proc/self/fd"
# Listing a few thousand entries takes well under a millisecond.
_INTERVAL = 1.0
_NEAR_SHARE = 0.9
_CLEAR_SHARE = 0.8
_REPEAT_AFTER = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenFilesLimit:
    """RLIMIT_NOFILE before and after `raise_open_files_limit`."""

    soft_before: int
    soft: int
    hard: int


def raise_open_files_limit() -> OpenFilesLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit, and log both once.

    The soft limit is often 1,024 for the sake of select(), which this process
    never uses (asyncio, gRPC and asyncpg use epoll). A hard limit we cannot
    reach (RLIM_INFINITY where the system caps lower) leaves the soft one as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = soft
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            raised = hard
        except (ValueError, OSError) as exc:
            _log.warning(
                "cannot raise the open-files limit: %s",
                exc,
                extra={"event": "open_files_limit_unchanged", "soft": soft, "hard": hard},
            )
    _log.info(
        "open-files limit",
        extra={"event": "open_files_limit", "soft_before": soft, "soft": raised, "hard": hard},
    )
    return OpenFilesLimit(soft_before=soft, soft=raised, hard=hard)


class _Level(IntEnum):
    OK = 0
    NEAR = 1
    EXHAUSTED = 2


_EVENTS = {_Level.NEAR: "open_files_near_limit", _Level.EXHAUSTED: "open_files_exhausted"}
_MESSAGES = {
    _Level.NEAR: "open descriptors near the limit",
    _Level.EXHAUSTED: "open descriptors at the limit: new connections are refused",
}


class DescriptorWatch:
    """Warns while this process's open descriptors are near, or at, the soft limit.

    At the limit the server refuses connections (they queue unaccepted) and
    cannot open database connections. A WARNING when a level is first reached,
    then at most one a minute while it lasts, however the count wavers; one INFO
    once the count is well under the line again.
    """

    def __init__(self) -> None:
        # Linux's; elsewhere the watch does nothing.
        self._countable = os.path.isdir(_FD_DIR)
        self._level = _Level.OK
        self._logged = _Level.OK
        self._logged_at = 0.0

    async def run(self) -> None:
        if not self._countable:
            _log.info("open descriptors cannot be counted here", extra={"event": "fd_watch_off"})
            return
        while True:
            self.check()
            await asyncio.sleep(_INTERVAL)

    def check(self) -> None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        try:
            # Counts the descriptor listdir itself opens, so a full table reads as `limit`.
            count: int | None = len(os.listdir(_FD_DIR))
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            count = None  # not even one descriptor left to look with
        if count is None or count >= limit:
            level = _Level.EXHAUSTED
        elif count >= limit * _NEAR_SHARE:
            level = _Level.NEAR
        elif self._level and count >= limit * _CLEAR_SHARE:
            level = _Level.NEAR  # not yet clear: no INFO/WARNING pair at every wobble
        else:
            level = _Level.OK
        self._report(level, count, limit)

    def _report(self, level: _Level, count: int | None, limit: int) -> None:
        extra: dict[str, object] = {"open_files": count, "limit": limit}
        was, self._level = self._level, level
        if level is _Level.OK:
            if was:
                self._logged = _Level.OK
                _log.info(
                    "open descriptors back under the limit",
                    extra={"event": "open_files_recovered", **extra},
                )
            return
        now = time.monotonic()
        if level > self._logged or now - self._logged_at >= _REPEAT_AFTER:
            self._logged, self._logged_at = level, now
            _log.warning(_MESSAGES[level], extra={"event": _EVENTS[level], **extra})
