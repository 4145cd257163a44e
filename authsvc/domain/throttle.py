"""Login throttling: failed attempts per account and per client address.

Counters live in PostgreSQL, so every replica enforces the same limits. Each
attempt is admitted before its password is checked, and only while a bucket's
failures plus its attempts still being checked are under the limit: guesses sent
in parallel, through any replicas, get exactly the limit's worth of password
checks. A genuine burst (a user's devices all signing in at once) is not refused
for that: attempts over the limit only because others are still being checked
wait for them, a few hundred milliseconds at most. An attempt whose process died
before it settled stops counting after `IN_FLIGHT_EXPIRY`.

A bucket whose failures reach its limit refuses logins until its window ends,
then starts over: the lock always decays, so nobody can lock an account for
good, only for one window at a time. Refused attempts cost no argon2 time, and
the same answer comes for unknown emails, so the throttle does not reveal which
accounts exist. A success clears the account's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol, TypeVar

from authsvc.core.clock import Clock
from authsvc.core.errors import RateLimited
from authsvc.core.models import AuditEvent, BucketCount

__all__ = [
    "ATTEMPT_TIME_LIMIT",
    "IN_FLIGHT_EXPIRY",
    "LoginAttempt",
    "LoginThrottle",
    "LoginThrottleStore",
    "account_bucket",
    "ip_bucket",
    "settle_pending",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Waiting for a slot: the first retry soon (a password check takes ~0.1-0.2 s), then
# backing off, so a crowd of waiters does not hammer the bucket rows.
_FIRST_WAIT = 0.02
_LONGEST_WAIT = 0.5
# A slot normally frees within one password check; past this, answer instead of waiting.
_MAX_WAIT_SECONDS = 10.0
# Longer than any attempt lives (its call's deadline, the hashing queue): an attempt
# admitted this long ago is taken for one whose process died before it settled.
IN_FLIGHT_EXPIRY = timedelta(minutes=2)
# The longest a login may take once admitted (hashing queue included): well inside
# IN_FLIGHT_EXPIRY, so an attempt never stops counting while it is still running.
ATTEMPT_TIME_LIMIT = IN_FLIGHT_EXPIRY / 2
# What a caller refused only for attempts still in flight is told to wait.
_BUSY_RETRY_AFTER = timedelta(seconds=1)


# Tasks that must run to their end whatever happens to the call that started them; held
# here because the event loop keeps only weak references to tasks.
_RUNNING_TO_COMPLETION: set[asyncio.Task[Any]] = set()


async def settle_pending() -> None:
    """Wait for admissions and settlements still running (at shutdown, before the pool
    closes under them)."""
    await asyncio.gather(*_RUNNING_TO_COMPLETION, return_exceptions=True)


def _start(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(work)
    _RUNNING_TO_COMPLETION.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _RUNNING_TO_COMPLETION.discard(task)
    # Read the outcome: if its caller was cancelled meanwhile, nobody else will, and
    # asyncio would log the error as "never retrieved". (The caller saw it if it waited.)
    if not task.cancelled():
        task.exception()


async def _to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Await `work` in a task that a cancellation of the caller does not interrupt: the
    caller still sees CancelledError at once, and the work finishes anyway."""
    return await asyncio.shield(_start(work))


class LoginThrottleStore(Protocol):
    async def try_admit(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        *,
        now: datetime,
        window: timedelta,
        in_flight_since: datetime,
        may_admit: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]: ...

    async def count_failure(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        *,
        now: datetime,
        window: timedelta,
        event: AuditEvent,
    ) -> None: ...

    async def clear_failures(self, attempt_id: uuid.UUID, account_bucket: str) -> None: ...

    async def forget(self, attempt_id: uuid.UUID) -> None: ...

    async def audit(self, event: AuditEvent) -> None: ...


def account_bucket(email: str) -> str:
    # Hashed: the counters table holds no email addresses.
    return "account:" + hashlib.sha256(email.encode()).hexdigest()


def ip_bucket(ip_address: str) -> str:
    """IPv4 per address; IPv6 per /64, since one host usually holds a whole /64 and
    could otherwise rotate addresses to get a fresh limit per guess."""
    try:
        address = ipaddress.ip_address(ip_address)
    except ValueError:
        return "ip:" + ip_address
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "ip:" + str(address.ipv4_mapped)
        return "ip:" + str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return "ip:" + str(address)


class LoginAttempt:
    """An admitted attempt: settle it with `failed` or `succeeded`; leaving the `attempt`
    block without either (an error, a cancelled call) forgets it without counting.

    Settling is shielded from cancellation: a call cut off by its deadline is cancelled
    by the server and again by the client's RST_STREAM, and an interrupted settle would
    leave the attempt counting as in flight until IN_FLIGHT_EXPIRY.
    """

    __slots__ = ("_account", "_buckets", "_id", "_settled", "_throttle")

    def __init__(
        self, throttle: LoginThrottle, attempt_id: uuid.UUID, buckets: list[str], account: str
    ) -> None:
        self._throttle = throttle
        self._id = attempt_id
        self._buckets = buckets
        self._account = account
        self._settled = False

    async def failed(self, event: AuditEvent) -> None:
        """Count the failure in every bucket, with its audit record."""
        await self._settle(self._throttle.count_failure(self._id, self._buckets, event))

    async def succeeded(self) -> None:
        """Clear the account's count; the address's failures stand."""
        await self._settle(self._throttle.store.clear_failures(self._id, self._account))

    async def release(self) -> None:
        """Forget the attempt uncounted, unless it was settled."""
        if not self._settled:
            await self._settle(self._throttle.store.forget(self._id))

    async def _settle(self, settling: Coroutine[Any, Any, None]) -> None:
        self._settled = True
        try:
            await _to_completion(settling)
        except Exception:
            # Nothing was settled (the transaction rolled back): at least stop counting the
            # attempt as in flight, if the database lets us.
            with contextlib.suppress(Exception):
                await _to_completion(self._throttle.store.forget(self._id))
            raise


class LoginThrottle:
    __slots__ = ("_clock", "_per_account", "_per_ip", "_window", "store")

    def __init__(
        self,
        store: LoginThrottleStore,
        clock: Clock,
        *,
        per_account: int,
        per_ip: int,
        window: timedelta,
    ) -> None:
        self.store = store
        self._clock = clock
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window

    def _limits(self, email: str, ip_address: str) -> dict[str, int]:
        limits = {account_bucket(email): self._per_account}
        if ip_address:
            limits[ip_bucket(ip_address)] = self._per_ip
        return limits

    @asynccontextmanager
    async def attempt(
        self, email: str, ip_address: str, refused: AuditEvent
    ) -> AsyncIterator[LoginAttempt]:
        """Admit one login attempt (waiting for attempts in flight if need be) for the
        block. Raises RateLimited, and audits `refused`, if a bucket has used up its
        failures (or its slots stay taken past the longest wait)."""
        limits = self._limits(email, ip_address)
        buckets = sorted(limits)
        attempt_id = uuid.uuid4()
        await self._admit(attempt_id, buckets, limits, refused)
        attempt = LoginAttempt(self, attempt_id, buckets, account_bucket(email))
        try:
            yield attempt
        finally:
            await attempt.release()

    async def count_failure(
        self, attempt_id: uuid.UUID, buckets: list[str], event: AuditEvent
    ) -> None:
        await self.store.count_failure(
            attempt_id, buckets, now=self._clock.now(), window=self._window, event=event
        )

    async def _admit(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        limits: Mapping[str, int],
        refused: AuditEvent,
    ) -> None:
        def has_slot(counts: Mapping[str, BucketCount]) -> bool:
            return all(c.failures + c.in_flight < limits[b] for b, c in counts.items())

        give_up_at = time.monotonic() + _MAX_WAIT_SECONDS
        wait = _FIRST_WAIT
        while True:
            now = self._clock.now()
            # Run to its end: a transaction interrupted twice (the deadline, then the
            # client's RST_STREAM) could not even roll back. If the call is cancelled
            # meanwhile, whatever it recorded is forgotten once it is over.
            admitting = _start(
                self.store.try_admit(
                    attempt_id,
                    buckets,
                    now=now,
                    window=self._window,
                    in_flight_since=now - IN_FLIGHT_EXPIRY,
                    may_admit=has_slot,
                )
            )
            try:
                counts = await asyncio.shield(admitting)
            except BaseException:
                # Cancelled, or the connection lost around COMMIT: the admission may
                # have been recorded all the same.
                _start(self._forget_after(admitting, attempt_id))
                raise
            if has_slot(counts):
                return
            spent = {b: c for b, c in counts.items() if c.failures >= limits[b]}
            if spent:
                until = max(c.window_started_at for c in spent.values()) + self._window
                await self._refuse(spent, refused, until - now)
            if time.monotonic() >= give_up_at:
                await self._refuse(counts, refused, _BUSY_RETRY_AFTER)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
            wait = min(wait * 2, _LONGEST_WAIT)

    async def _forget_after(self, admitting: asyncio.Task[Any], attempt_id: uuid.UUID) -> None:
        with contextlib.suppress(Exception):
            await admitting
        # Best effort: left behind, the rows stop counting after IN_FLIGHT_EXPIRY.
        with contextlib.suppress(Exception):
            await self.store.forget(attempt_id)

    async def _refuse(
        self, blocking: Mapping[str, BucketCount], refused: AuditEvent, retry_after: timedelta
    ) -> NoReturn:
        # Which limit (account, ip), never the bucket: it names the address or account.
        kinds = sorted({bucket.split(":", 1)[0] for bucket in blocking})
        _log.warning("login throttled", extra={"event": "login_throttled", "limit": kinds})
        await _to_completion(self.store.audit(refused))
        raise RateLimited("too many login attempts; try again later", retry_after=retry_after)
