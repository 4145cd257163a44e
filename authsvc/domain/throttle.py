"""Login throttling: failed attempts per account and per client address.

Counters live in PostgreSQL, so every replica enforces the same limits. Each
attempt is counted before its password is checked, in one statement, so
guesses sent in parallel cannot all slip under the limit; a success then
clears the account's count and takes its attempt back from the address's.
An attempt that never settles (the caller gave up, the database went away
mid-login) stays counted: the throttle errs on the side of refusing.

A bucket over its limit refuses logins until its window ends, then starts
over: the lock always decays, so nobody can lock an account for good, only
for one window at a time. Throttled attempts are refused before the password
is checked, so they cost no argon2 time, and the same answer comes for
unknown emails, so the throttle does not reveal which accounts exist.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.errors import RateLimited
from authsvc.core.models import AuditEvent

__all__ = ["LoginThrottle", "LoginThrottleStore"]

_log = logging.getLogger(__name__)


class LoginThrottleStore(Protocol):
    async def count_attempt(
        self, buckets: list[str], *, now: datetime, window: timedelta
    ) -> dict[str, tuple[int, datetime]]: ...

    async def settle_success(self, account_bucket: str, other_buckets: list[str]) -> None: ...

    async def audit(self, event: AuditEvent) -> None: ...


def account_bucket(email: str) -> str:
    # Hashed: the counters table holds no email addresses.
    return "account:" + hashlib.sha256(email.encode()).hexdigest()


def _ip_bucket(ip_address: str) -> str:
    return "ip:" + ip_address


class LoginThrottle:
    __slots__ = ("_per_account", "_per_ip", "_store", "_window")

    def __init__(
        self, store: LoginThrottleStore, *, per_account: int, per_ip: int, window: timedelta
    ) -> None:
        self._store = store
        self._per_account = per_account
        self._per_ip = per_ip
        self._window = window

    def _limits(self, email: str, ip_address: str) -> dict[str, int]:
        limits = {account_bucket(email): self._per_account}
        if ip_address:
            limits[_ip_bucket(ip_address)] = self._per_ip
        return limits

    async def admit(self, email: str, ip_address: str, now: datetime, refused: AuditEvent) -> None:
        """Count this attempt; raise RateLimited (and audit `refused`) if it is over a limit."""
        limits = self._limits(email, ip_address)
        counted = await self._store.count_attempt(list(limits), now=now, window=self._window)
        over = {
            bucket: started + self._window
            for bucket, (attempts, started) in counted.items()
            if attempts > limits[bucket]
        }
        if over:
            # Which limit (account, ip), never the bucket: it names the address or account.
            kinds = sorted(bucket.split(":", 1)[0] for bucket in over)
            _log.warning("login throttled", extra={"event": "login_throttled", "limit": kinds})
            await self._store.audit(refused)
            raise RateLimited(
                "too many failed logins; try again later", retry_after=max(over.values()) - now
            )

    async def record_failure(self, event: AuditEvent) -> None:
        """The attempt is already counted; leave its audit record."""
        await self._store.audit(event)

    async def settle_success(self, email: str, ip_address: str) -> None:
        """A successful login clears the account's count and is no failure of the address."""
        account, *others = self._limits(email, ip_address)
        await self._store.settle_success(account, others)
