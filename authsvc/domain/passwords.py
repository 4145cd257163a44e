"""Password hashing with argon2id, off the event loop, in two bounded lanes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Protocol, TypeVar

import argon2

from authsvc.core.errors import ServerBusy

__all__ = ["Argon2Hasher", "HashSlot", "Lane", "PasswordHasher"]

T = TypeVar("T")

# Sign-up hashing runs this much nicer than sign-ins (0 to 19; higher yields more).
_SIGN_UP_NICENESS = 10
# Places one client may hold in a lane at once (a lane has workers + queue places).
_PLACES_PER_CLIENT = 2
# What a caller refused for want of hashing capacity is told to wait: about one hash.
_BUSY_RETRY_AFTER = timedelta(seconds=1)


class Lane(enum.Enum):
    """Whose work a hash is. Each lane has its own threads and queue, so a flood of
    sign-ups can fill its own lane but never take the threads that sign-ins use."""

    SIGN_IN = "sign_in"
    SIGN_UP = "sign_up"


class HashSlot(Protocol):
    async def hash(self, password: str) -> str: ...


class PasswordHasher(Protocol):
    """`client` names who asks (the throttle's name for a client address; "" for one
    not to be held to a share, such as an operator or a listed shared address): one
    client holds at most a few places in a lane and waits for its own to free, so a
    single client cannot fill a lane and starve everyone else."""

    def reserve(self, lane: Lane, *, client: str) -> AbstractAsyncContextManager[HashSlot]:
        """A place in `lane` for the block, or ServerBusy at once if it has none: taken
        before the work that leads to the hash, so a flood is refused before it costs
        database round trips too."""
        ...

    async def hash(self, password: str, lane: Lane, *, client: str) -> str: ...

    async def verify(self, password_hash: str, password: str, *, client: str) -> bool:
        """On the sign-in lane."""
        ...

    async def burn(self, password: str, *, client: str) -> None:
        """Spend the time of one verify, for an account that does not exist."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...


class _BoundedLane:
    """Threads plus a bound on the jobs holding a place in them (running or waiting).
    Past the bound a job is refused at once (ServerBusy): queued, it would only run
    after its caller's deadline had passed, and every job behind it too. A client
    already holding `_PLACES_PER_CLIENT` places waits for one of its own to free before
    it may take another (its wait is bounded by the login throttle's attempts in flight,
    and by its call's deadline)."""

    __slots__ = ("_admitted", "_by_client", "_executor", "_freed", "_limit")

    def __init__(self, name: str, *, workers: int, queue_limit: int, niceness: int = 0) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix=name,
            initializer=_lower_priority,
            initargs=(niceness,),
        )
        self._limit = workers + queue_limit
        self._admitted = 0
        self._by_client: collections.Counter[str] = collections.Counter()
        self._freed = asyncio.Condition()

    @asynccontextmanager
    async def place(self, client: str) -> AsyncIterator[None]:
        if client and self._by_client[client] >= _PLACES_PER_CLIENT:
            async with self._freed:
                await self._freed.wait_for(lambda: self._by_client[client] < _PLACES_PER_CLIENT)
        if self._admitted >= self._limit:
            raise ServerBusy(
                "password hashing is at capacity; try again shortly",
                retry_after=_BUSY_RETRY_AFTER,
            )
        self._admitted += 1
        if client:
            self._by_client[client] += 1
        try:
            yield
        finally:
            self._admitted -= 1
            if client:
                self._by_client[client] -= 1
                if not self._by_client[client]:
                    del self._by_client[client]
                async with self._freed:
                    self._freed.notify_all()

    async def run(self, work: Callable[..., T], *args: str) -> T:
        """Run `work` on a thread; the caller holds a place."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_priority(niceness: int) -> None:
    """Run this thread, and the lane threads argon2 starts from it (Linux threads
    inherit their creator's nice value), at a lower CPU priority, so hashing for
    sign-ups yields the cores to sign-ins whenever both want them."""
    if niceness and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


class _Slot:
    __slots__ = ("_hasher", "_lane")

    def __init__(self, lane: _BoundedLane, hasher: argon2.PasswordHasher) -> None:
        self._lane = lane
        self._hasher = hasher

    async def hash(self, password: str) -> str:
        return await self._lane.run(self._hasher.hash, password)


class Argon2Hasher:
    """argon2id in bounded thread pools, one per Lane.

    Each hash allocates memory_cost KiB, so the thread count (both lanes) is also the
    cap on the memory hashing can take.
    """

    __slots__ = ("_dummy_hash", "_hasher", "_lanes")

    def __init__(
        self,
        *,
        time_cost: int,
        memory_cost_kib: int,
        parallelism: int,
        sign_in_workers: int,
        sign_up_workers: int,
        queue_limit: int,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._lanes = {
            Lane.SIGN_IN: _BoundedLane(
                "argon2-sign-in", workers=sign_in_workers, queue_limit=queue_limit
            ),
            Lane.SIGN_UP: _BoundedLane(
                "argon2-sign-up",
                workers=sign_up_workers,
                queue_limit=queue_limit,
                niceness=_SIGN_UP_NICENESS,
            ),
        }
        # Verified against for unknown emails, so they cost what a real account costs.
        self._dummy_hash = self._hasher.hash("authsvc dummy password")

    @asynccontextmanager
    async def reserve(self, lane: Lane, *, client: str) -> AsyncIterator[HashSlot]:
        bounded = self._lanes[lane]
        async with bounded.place(client):
            yield _Slot(bounded, self._hasher)

    async def hash(self, password: str, lane: Lane, *, client: str) -> str:
        async with self.reserve(lane, client=client) as slot:
            return await slot.hash(password)

    async def verify(self, password_hash: str, password: str, *, client: str) -> bool:
        lane = self._lanes[Lane.SIGN_IN]
        async with lane.place(client):
            return await lane.run(self._verify, password_hash, password)

    async def burn(self, password: str, *, client: str) -> None:
        await self.verify(self._dummy_hash, password, client=client)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
