"""Login and sign-up throttling, with counters in PostgreSQL so every replica
enforces the same limits.

A failed login counts in three kinds of bucket:
- the account from this address (`pair:`), a fast limit: it stops a guesser without
  touching the owner elsewhere;
- the account from any address it has not signed in from (`account:`), slower, and
  escalating: a longer run of failures locks it for a day (`account-day:`);
- the address, across accounts it is not known to (`ip:`); addresses listed as shared
  (an office NAT, a backend signing users in) get a higher limit.
An address the account signed in from within `known_address_retention` is exempt from
the account and address buckets, so an attack can lock out neither an owner on a
known device nor a colleague behind the same NAT; only its own pair bucket applies.

Each attempt is admitted before its password is checked, and only while a bucket's
failures plus its attempts still being checked are under the limit: guesses sent
in parallel, through any replicas, get exactly the limit's worth of password
checks. A genuine burst (a user's devices all signing in at once) is not refused
for that: attempts over the limit only because others are still being checked
wait for them, a few hundred milliseconds at most. An attempt whose process died
before it settled stops counting after `IN_FLIGHT_EXPIRY`.

A bucket whose failures reach its limit refuses logins until its window ends,
then starts over. Refused attempts cost no argon2 time and no write (one read of
the counters; the audit trail gets one row per address and interval, see
domain/refusals.py), and the same answer comes for unknown emails, so the
throttle does not reveal which accounts exist. A success forgives the account's
failures from that address and in the window; a day lock and the address's count stand.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol, TypeVar

from authsvc.core.clock import Clock
from authsvc.core.errors import RateLimited
from authsvc.core.models import AuditEvent, BucketCount
from authsvc.domain.refusals import RefusalLog

__all__ = [
    "ATTEMPT_TIME_LIMIT",
    "ESCALATED_WINDOW",
    "ESCALATION_FACTOR",
    "IN_FLIGHT_EXPIRY",
    "SIGN_UP_BUCKET_PREFIX",
    "SIGN_UP_TOTAL_BUCKET",
    "Limit",
    "LoginAttempt",
    "LoginLimits",
    "LoginThrottle",
    "LoginThrottleStore",
    "SharedAddresses",
    "SignUpLimits",
    "SignUpThrottle",
    "account_bucket",
    "escalated_account_bucket",
    "ip_bucket",
    "pair_bucket",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

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


class _RunToCompletion:
    """Tasks that must run to their end whatever happens to the call that started them;
    held here because the event loop keeps only weak references to tasks."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # Read the outcome: if its caller was cancelled meanwhile, nobody else will, and
        # asyncio would log the error as "never retrieved". (The caller saw it if it waited.)
        if not task.cancelled():
            task.exception()

    async def shielded(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work` in a task that a cancellation of the caller does not interrupt: the
        caller still sees CancelledError at once, and the work finishes anyway."""
        return await asyncio.shield(self.start(work))

    async def wait(self) -> None:
        # A task ending may have started another (a forget after an admission).
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class LoginThrottleStore(Protocol):
    """Windowed counters per bucket, shared by every replica, and the attempts in flight.

    Buckets go in as a list, with `windows[i]` the window of `buckets[i]`, and counts
    come back by bucket name. A bucket whose window has passed by `now` counts as
    starting over (no failures); one never counted may be absent from the result. A
    count's `in_flight` covers the attempts admitted after `in_flight_since` and not yet
    settled. Methods that lock take the buckets' rows in name order, so two attempts
    never deadlock. Every method raises DatabaseUnavailable when the database cannot be
    reached in time; then nothing it would have written is written."""

    async def read(
        self,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        in_flight_since: datetime | None = None,
    ) -> Mapping[str, BucketCount]:
        """The buckets' failures (and, given `in_flight_since`, their attempts in flight;
        else 0), without locking or writing: a refused attempt costs one read."""
        ...

    async def try_admit(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        in_flight_since: datetime,
        may_admit: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        """Lock the buckets (a passed window starts over at `now`) and, if `may_admit`
        allows it on their counts, record `attempt_id` in flight in each, in one
        transaction; nothing is written if it refuses. Returns the counts `may_admit`
        judged, every bucket present."""
        ...

    async def take(
        self,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        may_take: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        """Lock the buckets and, if `may_take` allows it on their counts, count one use
        in every bucket (for limits on every attempt, such as sign-ups), atomically.
        Returns the counts `may_take` judged, every bucket present."""
        ...

    async def count_failure(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        windows: list[timedelta],
        *,
        now: datetime,
        event: AuditEvent,
    ) -> None:
        """Settle a failed attempt, atomically: one more failure in every bucket (the
        first failure of a window starts it at `now`), `attempt_id` no longer in
        flight, and `event` recorded."""
        ...

    async def clear_failures(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        cleared: list[str],
        known_address: str,
        *,
        now: datetime,
    ) -> None:
        """Settle a successful attempt admitted in `buckets`, atomically: the `cleared`
        buckets' failures are forgiven, `known_address` (a pair bucket) is remembered as
        signed in from at `now`, and `attempt_id` is no longer in flight."""
        ...

    async def is_known_address(self, pair: str, *, since: datetime) -> bool:
        """Whether the account signed in from this pair bucket's address after `since`."""
        ...

    async def forget(self, attempt_id: uuid.UUID, buckets: list[str]) -> None:
        """Stop counting `attempt_id` in flight in `buckets` (those it was admitted in),
        uncounted (its call ended without an outcome). An unknown or settled attempt is
        no error."""
        ...


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `failures` in a bucket per `window`."""

    failures: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class SharedAddresses:
    """Addresses many people share (an office NAT, a backend calling Login for its
    users): their per-address limits are `factor` times higher, and the hashing lanes
    hold them to no client's share."""

    networks: tuple[IpNetwork, ...] = ()
    factor: int = 1

    def includes(self, ip_address: str) -> bool:
        try:
            address = ipaddress.ip_address(ip_address)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def per_address(self, ip_address: str, limit: int) -> int:
        """The per-address `limit` as it applies to this address."""
        return limit * self.factor if self.includes(ip_address) else limit

    def hashing_client(self, ip_address: str) -> str:
        """Whom a password hash is for, as the hashing lanes share places out: the
        address's bucket, or "" (held to no share) for no address or a shared one."""
        if not ip_address or self.includes(ip_address):
            return ""
        return ip_bucket(ip_address)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginLimits:
    per_account_and_address: int
    per_account: int
    per_address: int
    window: timedelta
    shared: SharedAddresses = field(default_factory=SharedAddresses)
    known_address_retention: timedelta = timedelta(days=90)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptBuckets:
    """The buckets one login attempt counts in; `forgiven` are cleared by its success,
    and `pair` (the account from this address) is then remembered as known."""

    limits: Mapping[str, Limit]
    pair: str
    forgiven: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class SignUpLimits:
    per_address: int
    total: int
    window: timedelta
    shared: SharedAddresses = field(default_factory=SharedAddresses)


SIGN_UP_BUCKET_PREFIX = "signup:"
SIGN_UP_TOTAL_BUCKET = SIGN_UP_BUCKET_PREFIX + "total"

# A run of failures this many times the account's limit, within a day, locks the
# account (for unknown addresses) for the rest of that day: Keycloak-style escalation.
ESCALATION_FACTOR = 5
ESCALATED_WINDOW = timedelta(days=1)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def account_bucket(email: str) -> str:
    # Hashed: the counters table holds no email addresses.
    return "account:" + _digest(email)


def escalated_account_bucket(email: str) -> str:
    return "account-day:" + _digest(email)


def pair_bucket(email: str, ip_address: str) -> str:
    """The account from one address (IPv6: its /64)."""
    return "pair:" + _digest(email + "\n" + ip_bucket(ip_address))


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

    __slots__ = ("_buckets", "_completions", "_id", "_settled", "_throttle")

    def __init__(
        self,
        throttle: LoginThrottle,
        attempt_id: uuid.UUID,
        buckets: AttemptBuckets,
        completions: _RunToCompletion,
    ) -> None:
        self._throttle = throttle
        self._id = attempt_id
        self._buckets = buckets
        self._completions = completions
        self._settled = False

    async def failed(self, event: AuditEvent) -> None:
        """Count the failure in every bucket, with its audit record."""
        limits = self._buckets.limits
        buckets = sorted(limits)
        windows = [limits[b].window for b in buckets]
        store = self._throttle.store
        now = self._throttle.clock.now()
        await self._settle(store.count_failure(self._id, buckets, windows, now=now, event=event))

    async def succeeded(self) -> None:
        """Forgive the account's failures, from this address and in this window (a day
        lock and the address's failures stand), and remember the address as one the
        account signs in from."""
        store = self._throttle.store
        now = self._throttle.clock.now()
        pair, forgiven = self._buckets.pair, self._buckets.forgiven
        buckets = sorted(self._buckets.limits)
        await self._settle(store.clear_failures(self._id, buckets, forgiven, pair, now=now))

    async def release(self) -> None:
        """Forget the attempt uncounted, unless it was settled."""
        if not self._settled:
            await self._settle(self._forget())

    async def _settle(self, settling: Coroutine[Any, Any, None]) -> None:
        self._settled = True
        try:
            await self._completions.shielded(settling)
        except Exception:
            # Nothing was settled (the transaction rolled back): at least stop counting the
            # attempt as in flight, if the database lets us.
            with contextlib.suppress(Exception):
                await self._completions.shielded(self._forget())
            raise

    def _forget(self) -> Coroutine[Any, Any, None]:
        return self._throttle.store.forget(self._id, sorted(self._buckets.limits))


class LoginThrottle:
    """Admits login attempts and counts their outcomes (see the module docstring).

    Admissions and settlements run to their end even when their call is cancelled, in
    tasks this throttle owns: `aclose()` waits for them, at shutdown, before the pool
    closes under them."""

    __slots__ = ("_completions", "_limits", "_refusals", "clock", "store")

    def __init__(
        self,
        store: LoginThrottleStore,
        clock: Clock,
        refusals: RefusalLog,
        limits: LoginLimits,
    ) -> None:
        self.store = store
        self.clock = clock
        self._refusals = refusals
        self._limits = limits
        self._completions = _RunToCompletion()

    async def aclose(self) -> None:
        """Wait for this throttle's admissions and settlements still running."""
        await self._completions.wait()

    def client_of(self, ip_address: str) -> str:
        return self._limits.shared.hashing_client(ip_address)

    async def _buckets(self, email: str, ip_address: str) -> AttemptBuckets:
        limits = self._limits
        pair = pair_bucket(email, ip_address)
        buckets = {pair: Limit(limits.per_account_and_address, limits.window)}
        since = self.clock.now() - limits.known_address_retention
        if ip_address and await self.store.is_known_address(pair, since=since):
            return AttemptBuckets(limits=buckets, pair=pair, forgiven=[pair])
        account = account_bucket(email)
        buckets[account] = Limit(limits.per_account, limits.window)
        buckets[escalated_account_bucket(email)] = Limit(
            limits.per_account * ESCALATION_FACTOR, ESCALATED_WINDOW
        )
        if ip_address:
            per_address = limits.shared.per_address(ip_address, limits.per_address)
            buckets[ip_bucket(ip_address)] = Limit(per_address, limits.window)
        return AttemptBuckets(limits=buckets, pair=pair, forgiven=sorted([pair, account]))

    @asynccontextmanager
    async def attempt(
        self, email: str, ip_address: str, refused: AuditEvent
    ) -> AsyncIterator[LoginAttempt]:
        """Admit one login attempt (waiting for attempts in flight if need be) for the
        block. Raises RateLimited, and notes `refused`, if a bucket has used up its
        failures (or its slots stay taken past the longest wait)."""
        buckets = await self._buckets(email, ip_address)
        attempt_id = uuid.uuid4()
        await self._admit(attempt_id, buckets.limits, refused)
        attempt = LoginAttempt(self, attempt_id, buckets, self._completions)
        try:
            yield attempt
        finally:
            await attempt.release()

    @asynccontextmanager
    async def address_attempt(
        self, ip_address: str, refused: AuditEvent
    ) -> AsyncIterator[LoginAttempt]:
        """An attempt counted against the client address alone, in the same `ip:` bucket
        as Login's (one budget of guesses per address, whatever it guesses): for a secret
        that names no account, such as a password-reset token. Settle a wrong one with
        `failed`; a right one leaves the block unsettled, forgiving nothing. Without an
        address nothing limits it (as Login's address limit)."""
        limits: dict[str, Limit] = {}
        if ip_address:
            per_address = self._limits.shared.per_address(ip_address, self._limits.per_address)
            limits[ip_bucket(ip_address)] = Limit(per_address, self._limits.window)
        buckets = AttemptBuckets(limits=limits, pair="", forgiven=[])
        attempt_id = uuid.uuid4()
        if limits:
            await self._admit(attempt_id, limits, refused)
        attempt = LoginAttempt(self, attempt_id, buckets, self._completions)
        try:
            yield attempt
        finally:
            await attempt.release()

    async def _admit(
        self, attempt_id: uuid.UUID, limits: Mapping[str, Limit], refused: AuditEvent
    ) -> None:
        buckets = sorted(limits)
        windows = [limits[b].window for b in buckets]

        def has_slot(counts: Mapping[str, BucketCount]) -> bool:
            return all(c.failures + c.in_flight < limits[b].failures for b, c in counts.items())

        give_up_at = time.monotonic() + _MAX_WAIT_SECONDS
        wait = _FIRST_WAIT
        while True:
            now = self.clock.now()
            in_flight_since = now - IN_FLIGHT_EXPIRY
            # A read first: a refused attempt, or one waiting for a slot, writes nothing;
            # only an attempt the read finds a slot for locks and records itself.
            counts = await self.store.read(
                buckets, windows, now=now, in_flight_since=in_flight_since
            )
            self._refuse_if_spent(counts, limits, refused)
            if has_slot(counts):
                counts = await self._try_admit(
                    attempt_id, buckets, windows, now, in_flight_since, has_slot
                )
                if has_slot(counts):
                    return
                self._refuse_if_spent(counts, limits, refused)
            if time.monotonic() >= give_up_at:
                self._refuse(counts, refused, _BUSY_RETRY_AFTER)
            await asyncio.sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
            wait = min(wait * 2, _LONGEST_WAIT)

    async def _try_admit(
        self,
        attempt_id: uuid.UUID,
        buckets: list[str],
        windows: list[timedelta],
        now: datetime,
        in_flight_since: datetime,
        has_slot: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]:
        # Run to its end: a transaction interrupted twice (the deadline, then the
        # client's RST_STREAM) could not even roll back. If the call is cancelled
        # meanwhile, whatever it recorded is forgotten once it is over.
        admitting = self._completions.start(
            self.store.try_admit(
                attempt_id,
                buckets,
                windows,
                now=now,
                in_flight_since=in_flight_since,
                may_admit=has_slot,
            )
        )
        try:
            return await asyncio.shield(admitting)
        except BaseException:
            # Cancelled, or the connection lost around COMMIT: the admission may
            # have been recorded all the same.
            self._completions.start(self._forget_after(admitting, attempt_id, buckets))
            raise

    def _refuse_if_spent(
        self, counts: Mapping[str, BucketCount], limits: Mapping[str, Limit], refused: AuditEvent
    ) -> None:
        spent = {b: c for b, c in counts.items() if c.failures >= limits[b].failures}
        if spent:
            until = max(c.window_started_at + limits[b].window for b, c in spent.items())
            self._refuse(spent, refused, until - self.clock.now())

    async def _forget_after(
        self, admitting: asyncio.Task[Any], attempt_id: uuid.UUID, buckets: list[str]
    ) -> None:
        with contextlib.suppress(Exception):
            await admitting
        # Best effort: left behind, the rows stop counting after IN_FLIGHT_EXPIRY.
        with contextlib.suppress(Exception):
            await self.store.forget(attempt_id, buckets)

    def _refuse(
        self, blocking: Mapping[str, BucketCount], refused: AuditEvent, retry_after: timedelta
    ) -> NoReturn:
        # Which limit (pair, account, ip), never the bucket: it names the address or account.
        kinds = sorted({bucket.split(":", 1)[0] for bucket in blocking})
        self._refusals.note(refused, kinds, client=ip_bucket(refused.origin.ip_address))
        raise RateLimited("too many login attempts; try again later", retry_after=retry_after)


class SignUpThrottle:
    """Sign-ups per client address and in total, per window. Every attempt counts
    (there is no failure to wait for), and a refused one writes nothing."""

    __slots__ = ("_clock", "_limits", "_refusals", "_store")

    def __init__(
        self,
        store: LoginThrottleStore,
        clock: Clock,
        refusals: RefusalLog,
        limits: SignUpLimits,
    ) -> None:
        self._store = store
        self._clock = clock
        self._refusals = refusals
        self._limits = limits

    def client_of(self, ip_address: str) -> str:
        return self._limits.shared.hashing_client(ip_address)

    def _buckets(self, ip_address: str) -> dict[str, int]:
        limits = self._limits
        buckets = {SIGN_UP_TOTAL_BUCKET: limits.total}
        if ip_address:
            per_address = limits.shared.per_address(ip_address, limits.per_address)
            buckets[SIGN_UP_BUCKET_PREFIX + ip_bucket(ip_address)] = per_address
        return buckets

    async def take(self, ip_address: str, refused: AuditEvent) -> None:
        """Count one sign-up, or raise RateLimited (noting `refused`)."""
        limits = self._buckets(ip_address)
        buckets = sorted(limits)
        windows = [self._limits.window] * len(buckets)

        def under(counts: Mapping[str, BucketCount]) -> bool:
            return all(c.failures < limits[b] for b, c in counts.items())

        now = self._clock.now()
        counts = await self._store.read(buckets, windows, now=now)
        if under(counts):
            counts = await self._store.take(buckets, windows, now=now, may_take=under)
            if under(counts):
                return
        spent = {b: c for b, c in counts.items() if c.failures >= limits[b]}
        # "total" or "ip": which limit, never the address.
        self._refusals.note(
            refused,
            sorted(b.split(":")[1] for b in spent),
            client=ip_bucket(refused.origin.ip_address),
        )
        until = max(c.window_started_at for c in spent.values()) + self._limits.window
        raise RateLimited("too many sign-ups; try again later", retry_after=until - now)
