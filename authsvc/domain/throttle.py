"""Login throttling: failed attempts per account and per client address.

Counters live in PostgreSQL, so every replica enforces the same limits. Each
attempt takes a slot in its buckets before its password is checked, and only
while a bucket's failures plus the attempts still being checked are under its
limit: guesses sent in parallel, through any replicas, get exactly the limit's
worth of password checks. A genuine burst (a user's devices all signing in at
once) is not refused for that: attempts over the limit only because others are
still being checked wait for a slot, a few hundred milliseconds at most.

A bucket whose failures reach its limit refuses logins until its window ends,
then starts over: the lock always decays, so nobody can lock an account for
good, only for one window at a time. Refused attempts cost no argon2 time, and
the same answer comes for unknown emails, so the throttle does not reveal which
accounts exist. A success clears the account's count.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import RateLimited
from authsvc.core.models import AuditEvent, BucketCount

__all__ = ["LoginAttempt", "LoginThrottle", "LoginThrottleStore", "account_bucket", "ip_bucket"]

_log = logging.getLogger(__name__)

# Waiting for a slot: the first retry soon (a password check takes ~0.2 s), then
# backing off, so a crowd of waiters does not hammer the bucket rows.
_FIRST_WAIT = 0.02
_LONGEST_WAIT = 0.5
# A slot normally frees within one password check; past this, answer instead of waiting.
_MAX_WAIT_SECONDS = 10.0


class LoginThrottleStore(Protocol):
    async def try_take_slot(
        self,
        buckets: list[str],
        *,
        now: datetime,
        window: timedelta,
        may_take: Callable[[Mapping[str, BucketCount]], bool],
    ) -> Mapping[str, BucketCount]: ...

    async def settle(
        self,
        buckets: list[str],
        *,
        failed: bool,
        account_bucket: str,
        event: AuditEvent | None = None,
    ) -> None: ...

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
    """An admitted attempt's slot: settle it with `failed` or `succeeded`; leaving the
    `attempt` block without either (an error, a cancelled call) gives the slot back
    without counting anything.

    Settling is shielded from cancellation: a call cut off by its deadline is cancelled
    by the server and again by the client's RST_STREAM, and a settle interrupted there
    would leave the slot taken for the rest of the window.
    """

    __slots__ = ("_account", "_buckets", "_settled", "_store")

    def __init__(self, store: LoginThrottleStore, buckets: list[str], account: str) -> None:
        self._store = store
        self._buckets = buckets
        self._account = account
        self._settled = False

    async def failed(self, event: AuditEvent) -> None:
        """Count the failure in every bucket, with its audit record."""
        await self._settle(failed=True, account_bucket=self._account, event=event)

    async def succeeded(self) -> None:
        """Clear the account's count; the address's failures stand."""
        await self._settle(failed=False, account_bucket=self._account)

    async def release(self) -> None:
        """Give the slot back uncounted, unless the attempt was settled."""
        if not self._settled:
            await self._settle(failed=False, account_bucket="")

    async def _settle(
        self, *, failed: bool, account_bucket: str, event: AuditEvent | None = None
    ) -> None:
        self._settled = True
        settling = self._store.settle(
            self._buckets, failed=failed, account_bucket=account_bucket, event=event
        )
        await asyncio.shield(settling)


class LoginThrottle:
    __slots__ = ("_clock", "_per_account", "_per_ip", "_sleep", "_store", "_window")

    def __init__(
        self,
        store: LoginThrottleStore,
        clock: Clock,
        *,
        per_account: int,
        per_ip: int,
        window: timedelta,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._clock = clock
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window
        self._sleep = sleep

    def _limits(self, email: str, ip_address: str) -> dict[str, int]:
        limits = {account_bucket(email): self._per_account}
        if ip_address:
            limits[ip_bucket(ip_address)] = self._per_ip
        return limits

    @asynccontextmanager
    async def attempt(
        self, email: str, ip_address: str, refused: AuditEvent
    ) -> AsyncIterator[LoginAttempt]:
        """Admit one login attempt (waiting for a slot if need be) for the block.

        Raises RateLimited, and audits `refused`, if a bucket has used up its failures.
        """
        limits = self._limits(email, ip_address)
        buckets = sorted(limits)
        await self._admit(buckets, limits, refused)
        attempt = LoginAttempt(self._store, buckets, account_bucket(email))
        try:
            yield attempt
        finally:
            await attempt.release()

    async def _admit(
        self, buckets: list[str], limits: Mapping[str, int], refused: AuditEvent
    ) -> None:
        def has_slot(counts: Mapping[str, BucketCount]) -> bool:
            return all(c.failures + c.pending < limits[b] for b, c in counts.items())

        give_up_at = time.monotonic() + _MAX_WAIT_SECONDS
        wait = _FIRST_WAIT
        while True:
            now = self._clock.now()
            counts = await self._store.try_take_slot(
                buckets, now=now, window=self._window, may_take=has_slot
            )
            if has_slot(counts):
                return
            spent = {b: c for b, c in counts.items() if c.failures >= limits[b]}
            if spent:
                await self._refuse(spent, refused, now)
            if time.monotonic() >= give_up_at:
                # Slots held by attempts that never settled (a replica died mid-login):
                # they free with the window.
                await self._refuse(counts, refused, now)
            await self._sleep(wait * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
            wait = min(wait * 2, _LONGEST_WAIT)

    async def _refuse(
        self, blocking: Mapping[str, BucketCount], refused: AuditEvent, now: datetime
    ) -> None:
        # Which limit (account, ip), never the bucket: it names the address or account.
        kinds = sorted({bucket.split(":", 1)[0] for bucket in blocking})
        _log.warning("login throttled", extra={"event": "login_throttled", "limit": kinds})
        await self._store.audit(refused)
        until = max(c.window_started_at for c in blocking.values()) + self._window
        raise RateLimited("too many failed logins; try again later", retry_after=until - now)
