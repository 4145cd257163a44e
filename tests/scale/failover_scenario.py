"""Failovers under a steady Refresh load: what tests/scale/test_failover.py asserts and
`python -m bench.failover` measures.

A `serve` process runs on the two-host URL of a `ReplicatedPostgres`. Several clients each
refresh one session's chain in a loop, keeping the newest pair they were answered and sending
an idempotency key per rotation (as authsvc_client does), so a retry of a rotation whose answer
was lost returns the same successor. A WatchRevocations subscriber follows the feed from
before the first failover. Each failover SIGKILLs the primary (or fences it read-only: see
`Switch`) and promotes the standby at once (what a failover manager does after its own
detection delay, not measured here), waits
for every client to refresh again, revokes one session and waits for the subscriber to see
it, then rebuilds a standby for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from authsvc.service_keys import mint_service_key
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import Pair, Stub, bearer, error_info, login, pair_of, register
from tests.processes import ServerGroup, ServerProcess
from tests.scale.replicated_postgres import ReplicatedPostgres

__all__ = [
    "CLIENTS",
    "OK",
    "Call",
    "Failover",
    "FailoverRun",
    "Outcome",
    "Switch",
    "run_failovers",
    "serve_on",
]

# Clients refreshing at once: more than one per pool connection would only queue.
CLIENTS = 4
# Each call's deadline: far above a healthy call, so only a hang reaches it.
DEADLINE = 4.0
# A pause between one client's calls, so failing fast does not spin the 2-core machine.
PACE = 0.02
# Bounds each wait for an event (recovery, a revocation reaching the subscriber).
WAIT = 60.0
_POLL = 0.02
EMAIL = "failover@example.com"

# The status code and the ErrorInfo reason (for an error that carries none, its message).
Outcome = tuple[grpc.StatusCode, str]
OK: Outcome = (grpc.StatusCode.OK, "")


class Switch(enum.Enum):
    """How the primary stops taking writes."""

    # SIGKILL of every process of the primary (a crashed host), then the standby's promotion.
    CRASH = "crash"
    # The primary made read-only while it keeps running (a planned switchover's fence), the
    # calls seen refused, then the standby's promotion. The fenced node is left running.
    FENCE = "fence"


def _outcome(error: grpc.aio.AioRpcError) -> Outcome:
    try:
        code, reason, _ = error_info(error)
    except Exception:  # no google.rpc.Status: a transport failure, or a bug's INTERNAL
        return error.code(), error.details() or ""
    return code, reason


@dataclass(frozen=True, slots=True)
class Call:
    client: int
    started: float  # time.monotonic()
    ended: float
    outcome: Outcome


@dataclass
class _Chain:
    """One client's session: the newest pair it was answered, and the idempotency key of
    that pair's rotation (kept for every retry until one is answered)."""

    held: Pair
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


class _RefreshLoad:
    def __init__(self, stub: Stub, chains: list[_Chain]) -> None:
        self._stub = stub
        self.chains = chains
        self.calls: list[Call] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(n)) for n in range(len(self.chains))]

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _loop(self, client: int) -> None:
        chain = self.chains[client]
        while not self._stopping.is_set():
            request = pb.RefreshRequest(
                refresh_token=chain.held.refresh_token, idempotency_key=chain.key
            )
            started = time.monotonic()
            try:
                answer = await self._stub.Refresh(request, timeout=DEADLINE)
            except grpc.aio.AioRpcError as error:
                outcome = _outcome(error)
            else:
                outcome = OK
                chain.held = pair_of(answer)
                chain.key = uuid.uuid4().hex
            self.calls.append(Call(client, started, time.monotonic(), outcome))
            await asyncio.sleep(PACE)

    def has_each_failed_since(self, since: float) -> bool:
        """Whether every client has had a call begun at `since` or later refused."""
        failed = {c.client for c in self.calls if c.started >= since and c.outcome != OK}
        return len(failed) == len(self.chains)

    def recovered_at(self, since: float) -> float | None:
        """When the last client was answered again: each client's first answer to a call begun
        after its first refusal since `since` (a fence takes hold a moment after it is set,
        so calls begun just after it may still be answered); for a client never refused,
        its first answer to a call begun since then."""
        answered = []
        for client in range(len(self.chains)):
            calls = [c for c in self.calls if c.client == client and c.started >= since]
            refused = next((c.started for c in calls if c.outcome != OK), since)
            ok = [c.ended for c in calls if c.started >= refused and c.outcome == OK]
            if not ok:
                return None
            answered.append(min(ok))
        return max(answered)


class _Subscriber:
    """A WatchRevocations stream read to its end in a task; it should never end."""

    def __init__(self, stub: Stub, key: str) -> None:
        self._call = stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=bearer(key))
        self.seen: dict[str, tuple[int, float]] = {}  # session id -> (cursor, when)
        self.heartbeats = 0
        self.ended: Outcome | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self._call:
                if message.WhichOneof("event") == "revocation":
                    revocation = message.revocation
                    self.seen[revocation.session_id] = (revocation.cursor, time.monotonic())
                else:
                    self.heartbeats += 1
        except grpc.aio.AioRpcError as error:
            self.ended = _outcome(error)
        else:
            self.ended = OK

    async def close(self) -> None:
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@dataclass(frozen=True, slots=True)
class Failover:
    """One round: when the primary stopped taking writes (killed or fenced) and when the
    standby was promoted, when every client was answered again, when the subscriber saw the
    revocation made after it; the calls that ended from the switch to the recovery."""

    switched_at: float
    promoted_at: float
    recovered_at: float
    revoked_session: str
    revocation_seen_at: float
    calls: tuple[Call, ...]

    @property
    def failed(self) -> list[Call]:
        return [call for call in self.calls if call.outcome != OK]

    @property
    def time_to_recover(self) -> float:
        """From the switch until every client is answered again (promotion included)."""
        return self.recovered_at - self.switched_at

    @property
    def feed_resumed_in(self) -> float:
        """From the recovery until the subscriber saw the revocation made right after it."""
        return self.revocation_seen_at - self.recovered_at


@dataclass(frozen=True, slots=True)
class FailoverRun:
    failovers: tuple[Failover, ...]
    calls: tuple[Call, ...]  # every call of the load, first to last
    held: tuple[Pair, ...]  # each client's newest pair when the load stopped
    subscriber_ended: Outcome | None  # None: still open at the end, as it should be
    subscriber_seen: dict[str, int]  # revoked session id -> its cursor, as the subscriber saw
    cursor_before: int  # the feed's cursor (a heartbeat's) before the first failover
    throttled_email: str
    access_token_before: str  # minted before the first failover


@contextlib.asynccontextmanager
async def serve_on(cluster: ReplicatedPostgres, **settings: str) -> AsyncIterator[ServerProcess]:
    """A ready `authsvc serve` process on the cluster's two-host URL, killed after."""
    group = ServerGroup()
    try:
        yield await group.start_ready(cluster.service_dsn(), **settings)
    finally:
        await group.close()


async def _until(check: Callable[[], object], what: str) -> None:
    """Wait until `check()` is true (polled: it reads what the load recorded)."""
    try:
        async with asyncio.timeout(WAIT):
            while not check():  # noqa: ASYNC110
                await asyncio.sleep(_POLL)
    except TimeoutError:
        raise AssertionError(f"no {what} within {WAIT:.0f} s") from None


async def _heartbeat_cursor(stub: Stub, key: str) -> int:
    call = stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=bearer(key))
    try:
        async with asyncio.timeout(WAIT):
            async for message in call:
                if message.WhichOneof("event") == "heartbeat":
                    return int(message.heartbeat.cursor)
    finally:
        call.cancel()
    raise AssertionError("the feed ended before a heartbeat")


async def _revoke(stub: Stub, owner: Pair, spare: Pair) -> None:
    """RevokeSession, retried on UNAVAILABLE as a client does: after a fence, a pooled
    connection that sat idle through it fails its next write before the pool drops it."""
    request = pb.RevokeSessionRequest(session_id=spare.session_id)
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await stub.RevokeSession(
                    request, metadata=bearer(owner.access_token), timeout=DEADLINE
                )
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(PACE)


async def _fail_over(
    cluster: ReplicatedPostgres,
    load: _RefreshLoad,
    subscriber: _Subscriber,
    stub: Stub,
    owner: Pair,
    spare: Pair,
    switch: Switch,
) -> Failover:
    """One round, from a steady load to a rebuilt standby; `spare` is revoked after the switch."""
    steady = time.monotonic()
    await _until(lambda: load.recovered_at(steady) is not None, "steady load")
    switched = time.monotonic()
    if switch is Switch.CRASH:
        await cluster.kill_primary()
    else:
        await cluster.fence_primary()
        await _until(lambda: load.has_each_failed_since(switched), "refusal by the fenced primary")
    await cluster.promote()
    promoted = time.monotonic()
    await _until(lambda: load.recovered_at(switched) is not None, "recovery")
    recovered = load.recovered_at(switched)
    assert recovered is not None
    await _revoke(stub, owner, spare)
    await _until(lambda: spare.session_id in subscriber.seen or subscriber.ended, "revocation")
    seen = subscriber.seen.get(spare.session_id, (0, float("nan")))[1]
    calls = tuple(call for call in load.calls if switched <= call.ended <= recovered)
    await cluster.rebuild_standby()
    return Failover(switched, promoted, recovered, spare.session_id, seen, calls)


async def run_failovers(
    cluster: ReplicatedPostgres,
    rounds: int,
    *,
    switch: Switch = Switch.CRASH,
    throttle_failures: int = 0,
    steady_seconds: float = 0.0,
) -> FailoverRun:
    """Start a server on `cluster`, load it, fail over `rounds` times; before the first,
    make `throttle_failures` failed logins of one account (for the caller to check after)
    and let the load run for `steady_seconds` (for a measure of calls with no failover)."""
    key, entry = mint_service_key("failover-subscriber")
    async with serve_on(
        cluster,
        AUTHSVC_SERVICE_KEYS=entry,
        AUTHSVC_REVOCATION_HEARTBEAT_INTERVAL="200ms",
        # Quick to notice the primary is back: the pool replaces dead connections itself.
        AUTHSVC_DB_CONNECT_TIMEOUT="2s",
    ) as server:
        stub = server.stub
        owner = pair_of(await register(stub, EMAIL))
        chains = [_Chain(pair_of(await login(stub, EMAIL))) for _ in range(CLIENTS)]
        spares = [pair_of(await login(stub, EMAIL)) for _ in range(rounds)]
        throttled = "throttled@example.com"
        await register(stub, throttled)
        for _ in range(throttle_failures):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Login(pb.LoginRequest(email=throttled, password="wrong password"))
        cursor_before = await _heartbeat_cursor(stub, key)
        subscriber = _Subscriber(stub, key)
        load = _RefreshLoad(stub, chains)
        load.start()
        await asyncio.sleep(steady_seconds)
        failovers = []
        try:
            for spare in spares:
                failovers.append(
                    await _fail_over(cluster, load, subscriber, stub, owner, spare, switch)
                )
        finally:
            await load.stop()
            subscriber_ended = subscriber.ended
            await subscriber.close()
        return FailoverRun(
            failovers=tuple(failovers),
            calls=tuple(load.calls),
            held=tuple(chain.held for chain in chains),
            subscriber_ended=subscriber_ended,
            subscriber_seen={sid: cursor for sid, (cursor, _) in subscriber.seen.items()},
            cursor_before=cursor_before,
            throttled_email=throttled,
            access_token_before=owner.access_token,
        )
