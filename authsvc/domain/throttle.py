"""Login throttling: failed attempts per account and per client address.

Counters live in PostgreSQL, so every replica enforces the same limits. A
bucket at its limit refuses logins until its window ends, then starts over:
the lock always decays, so nobody can lock an account for good, only for one
window at a time. Throttled attempts are refused before the password is
checked, so they cost no argon2 time, and the same answer comes for unknown
emails, so the throttle does not reveal which accounts exist.
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
    async def failures(self, buckets: list[str]) -> dict[str, tuple[int, datetime]]: ...

    async def record_failure(
        self, buckets: list[str], *, now: datetime, window: timedelta, event: AuditEvent
    ) -> None: ...

    async def reset(self, bucket: str) -> None: ...


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

    async def check(self, email: str, ip_address: str, now: datetime) -> None:
        """Raise RateLimited if the account or the address is at its limit."""
        limits = self._limits(email, ip_address)
        counted = await self._store.failures(list(limits))
        blocked_until = max(
            (
                started + self._window
                for bucket, (failures, started) in counted.items()
                if failures >= limits[bucket] and now < started + self._window
            ),
            default=None,
        )
        if blocked_until is not None:
            _log.warning("login throttled", extra={"event": "login_throttled"})
            raise RateLimited(
                "too many failed logins; try again later", retry_after=blocked_until - now
            )

    async def record_failure(
        self, email: str, ip_address: str, now: datetime, event: AuditEvent
    ) -> None:
        limits = self._limits(email, ip_address)
        await self._store.record_failure(list(limits), now=now, window=self._window, event=event)

    async def reset_account(self, email: str) -> None:
        """A successful login clears the account's count (not the address's)."""
        await self._store.reset(account_bucket(email))
