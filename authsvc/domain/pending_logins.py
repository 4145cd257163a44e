"""Logins awaiting their second step: what is kept of one, and where."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from authsvc.core.factors import StoredPendingLogin
from authsvc.core.models import UserId

__all__ = ["MAX_FAILED_ATTEMPTS", "PendingLoginStore"]

# Wrong codes one pending login may take before it is dead (sign in again). The login
# throttle counts them too, per account and address, across pending logins.
MAX_FAILED_ATTEMPTS = 5


class PendingLoginStore(Protocol):
    async def create(self, pending: StoredPendingLogin, *, token_hash: bytes) -> None:
        """Keep a pending login under its token's hash."""
        ...

    async def find(
        self, user_id: UserId, token_hash: bytes, *, now: datetime, max_failures: int
    ) -> StoredPendingLogin | None:
        """The pending login if it is unexpired, has failed fewer than `max_failures` times,
        its account is enabled and its password unchanged since it was verified."""
        ...

    async def failed(self, user_id: UserId, pending_id: uuid.UUID) -> None:
        """Count a wrong code against it."""
        ...

    async def consume(self, user_id: UserId, pending_id: uuid.UUID, *, now: datetime) -> bool:
        """Delete it; False if it was gone (used by a concurrent call, or expired)."""
        ...
