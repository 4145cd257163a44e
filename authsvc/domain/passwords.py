"""Password hashing with argon2id, off the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import argon2

__all__ = ["Argon2Hasher", "PasswordHasher"]


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    async def burn(self, password: str) -> None:
        """Spend the time of one verify, for an account that does not exist."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class Argon2Hasher:
    """argon2id in a bounded thread pool.

    Each hash allocates memory_cost KiB, so the worker count is also the cap on
    the memory hashing can take; excess logins queue rather than swap.
    """

    __slots__ = ("_dummy_hash", "_executor", "_hasher")

    def __init__(
        self, *, time_cost: int, memory_cost_kib: int, parallelism: int, max_workers: int
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="argon2")
        # Verified against for unknown emails, so they cost what a real account costs.
        self._dummy_hash = self._hasher.hash("authsvc dummy password")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._verify, password_hash, password)

    async def burn(self, password: str) -> None:
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
