"""Load-generator processes: each runs grpc.aio clients (or asyncpg, for the
PostgreSQL bound) with a fixed number of calls in flight.

The parent hands every process a `LoadSpec` whose `start_at` is a
`time.monotonic()` instant (system-wide on Linux), so all processes warm up and
measure over the same window. A call counts when it starts inside the measured
window; it is timed until it completes.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import grpc

from authsvc.domain.refresh_tokens import hash_refresh_token, new_refresh_token, routed_user
from authsvc.store.sessions import _ROTATE_IF_CURRENT
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from bench import peer
from bench.empty_server import METHOD as EMPTY_METHOD

if TYPE_CHECKING:
    Stub: TypeAlias = auth_service_pb2_grpc.AuthServiceAsyncStub
else:
    Stub = auth_service_pb2_grpc.AuthServiceStub

__all__ = ["BURST", "MIX", "LoadResult", "LoadSpec", "Slot", "run_load"]

# refresh_same_token: this many concurrent Refresh calls present one token.
BURST = 50
# mixed: a service-mesh-like blend, cumulative thresholds over random() in [0, 1).
MIX = (("validate", 0.90), ("refresh", 0.97), ("login", 0.98), ("list_sessions", 0.99))
MIX_LAST = "logout"  # the remaining 1 %
_CALL_TIMEOUT = 60.0
_IDLE_TIMEOUT = timedelta(days=7)  # the service's default session idle timeout
OK = "OK"

Slot: TypeAlias = dict[str, Any]
Op: TypeAlias = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    scenario: str
    target: str
    dsn: str
    start_at: float
    warmup: float
    duration: float
    slots: list[Slot]
    channels: int = 4
    pg_pool_size: int = 5
    password: str = ""
    # Calls/s this process starts, spread over its slots; 0: as fast as answers come.
    rate: float = 0.0
    cpus: tuple[int, ...] = ()  # pin this process to these CPUs (taskset)
    # When this file appears, the window closes early (the parent's stage is over).
    stop_file: str = ""


@dataclass(slots=True, kw_only=True)
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    # When each measured call started (time.monotonic), parallel to latencies.
    started: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    late_by: float = 0.0


def run_load(spec: LoadSpec) -> LoadResult:
    """Entry point of one load process."""
    os.sched_setaffinity(0, spec.cpus or range(os.cpu_count() or 1))
    return asyncio.run(_run(spec))


def warm_up() -> int:
    """Imports done; lets the parent start the pool before the first scenario."""
    return os.getpid()


class _Recorder:
    __slots__ = ("_end", "_start", "result")

    def __init__(self, spec: LoadSpec) -> None:
        self._start = spec.start_at + spec.warmup
        self._end = self._start + spec.duration
        self.result = LoadResult()

    @property
    def end(self) -> float:
        return self._end

    async def close_when(self, stop_file: str) -> None:
        """Close the window as soon as `stop_file` exists."""
        while not os.path.exists(stop_file):  # noqa: ASYNC240 - a local stat, 10 times a second
            if time.monotonic() >= self._end:
                return
            await asyncio.sleep(0.1)
        self._end = min(self._end, time.monotonic())

    async def timed(self, op: Op) -> str:
        started = time.monotonic()
        try:
            code = await op()
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except (asyncpg.PostgresError, OSError) as exc:
            code = type(exc).__name__
        if self._start <= started < self._end:
            self.result.latencies.append(time.monotonic() - started)
            self.result.started.append(started)
            self.result.codes[code] += 1
        return code


async def _run(spec: LoadSpec) -> LoadResult:
    recorder = _Recorder(spec)
    # The peer speaks HTTP: each of its slots opens its own connection.
    is_peer = spec.scenario in peer.SCENARIOS
    channels = [
        grpc.aio.insecure_channel(spec.target) for _ in range(0 if is_peer else spec.channels)
    ]
    pg: asyncpg.Pool | None = None
    try:
        for channel in channels:
            await channel.channel_ready()
        if spec.scenario == "pg_refresh":
            pg = await asyncpg.create_pool(
                spec.dsn, min_size=spec.pg_pool_size, max_size=spec.pg_pool_size
            )
        delay = spec.start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        recorder.result.late_by = max(0.0, -delay)
        async with asyncio.TaskGroup() as group:
            if spec.stop_file:
                group.create_task(recorder.close_when(spec.stop_file))
            for index, slot in enumerate(spec.slots):
                picked = channels[index % len(channels)] if channels else None
                group.create_task(_drive(spec, slot, picked, pg, recorder))
    finally:
        for channel in channels:
            await channel.close()
        if pg is not None:
            await pg.close()
    return recorder.result


async def _drive(
    spec: LoadSpec,
    slot: Slot,
    channel: grpc.aio.Channel | None,
    pg: asyncpg.Pool | None,
    recorder: _Recorder,
) -> None:
    if channel is None:
        op = _peer_op(spec, slot)
    else:
        stub: Stub = Stub(channel)
        if spec.scenario == "refresh_same_token":
            await _burst_rounds(stub, slot, recorder)
            return
        op = _op(spec, slot, stub, channel, pg)
    if spec.rate > 0:
        await _paced(op, spec.rate / len(spec.slots), recorder)
        return
    while time.monotonic() < recorder.end:
        await recorder.timed(op)


async def _paced(op: Op, rate: float, recorder: _Recorder) -> None:
    """Open loop: start a call every 1/rate s from a random phase, without waiting
    for answers, so a slow answer cannot hide behind a slower send rate."""
    interval = 1.0 / rate
    next_at = time.monotonic() + random.random() * interval  # noqa: S311 - a phase, not a secret
    pending: set[asyncio.Task[str]] = set()
    while next_at < recorder.end:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        task = asyncio.create_task(recorder.timed(op))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
    if pending:
        await asyncio.gather(*pending)


def _op(
    spec: LoadSpec, slot: Slot, stub: Stub, channel: grpc.aio.Channel, pg: asyncpg.Pool | None
) -> Op:
    scenario = spec.scenario
    if scenario == "validate":
        return _validate(stub, itertools.cycle(slot["access_tokens"]).__next__)
    if scenario == "refresh":
        return _refresh_idle(stub, slot)
    if scenario == "refresh_keyed":
        return _refresh_idle(stub, slot, keyed=True)
    if scenario == "list_sessions":
        return _list_sessions(stub, slot)
    if scenario == "get_jwks":
        return _get_jwks(stub)
    if scenario == "login":
        return _login(stub, itertools.cycle(slot["emails"]), spec.password, slot)
    if scenario == "revoke_session":
        return _revoke(stub, slot)
    if scenario == "logout":
        return _logout(stub, slot)
    if scenario == "mixed":
        return _mixed(stub, slot, spec.password)
    if scenario == "grpc_empty":
        return _empty(channel)
    if scenario == "pg_refresh":
        assert pg is not None
        return _pg_refresh(pg, slot)
    raise ValueError(f"unknown scenario {scenario!r}")


def _peer_op(spec: LoadSpec, slot: Slot) -> Op:
    http = _HttpConnection(spec.target)
    if spec.scenario == "peer_get_session":
        return _peer_get_session(http, slot)
    if spec.scenario == "peer_list_sessions":
        return _peer_list_sessions(http, slot)
    raise ValueError(f"unknown peer scenario {spec.scenario!r}")


def _bearer(access_token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {access_token}"),)


def _validate(stub: Stub, next_token: Callable[[], str]) -> Op:
    async def op() -> str:
        request = pb.ValidateTokenRequest(access_token=next_token())
        response = await stub.ValidateToken(request, timeout=_CALL_TIMEOUT)
        return OK if response.active else "INACTIVE"

    return op


def _refresh(stub: Stub, slot: Slot) -> Op:
    async def op() -> str:
        request = pb.RefreshRequest(refresh_token=slot["refresh_token"])
        response = await stub.Refresh(request, timeout=_CALL_TIMEOUT)
        slot["refresh_token"] = response.refresh_token
        slot["access_token"] = response.access_token
        return OK

    return op


def _refresh_idle(stub: Stub, slot: Slot, *, keyed: bool = False) -> Op:
    """Refresh a session no other call of this slot is refreshing: open-loop load
    may start a call before the last one answered, and a session's refreshes
    queue on its row lock, which would measure one session's queue, not Refresh.
    `keyed`: with a new idempotency key each call, as both clients send."""
    idle = collections.deque(slot["refresh_tokens"])

    async def op() -> str:
        if not idle:
            return "NO_IDLE_SESSION"  # seeded too few for the latency seen
        key = str(uuid.uuid4()) if keyed else ""
        request = pb.RefreshRequest(refresh_token=idle.popleft(), idempotency_key=key)
        response = await stub.Refresh(request, timeout=_CALL_TIMEOUT)
        idle.append(response.refresh_token)
        return OK

    return op


def _list_sessions(stub: Stub, slot: Slot) -> Op:
    async def op() -> str:
        response = await stub.ListSessions(
            pb.ListSessionsRequest(page_size=20),
            metadata=_bearer(slot["access_token"]),
            timeout=_CALL_TIMEOUT,
        )
        return OK if len(response.sessions) == 20 else "SHORT_PAGE"

    return op


def _get_jwks(stub: Stub) -> Op:
    async def op() -> str:
        response = await stub.GetJwks(pb.GetJwksRequest(), timeout=_CALL_TIMEOUT)
        return OK if response.jwks_json else "EMPTY_JWKS"

    return op


def _login(stub: Stub, emails: itertools.cycle[str], password: str, slot: Slot) -> Op:
    async def op() -> str:
        request = pb.LoginRequest(email=next(emails), password=password)
        response = await stub.Login(request, timeout=_CALL_TIMEOUT)
        slot["refresh_token"] = response.refresh_token
        slot["access_token"] = response.access_token
        return OK

    return op


def _revoke(stub: Stub, slot: Slot) -> Op:
    session_ids = iter(slot["session_ids"])

    async def op() -> str:
        session_id = next(session_ids, None)
        if session_id is None:
            return "EXHAUSTED"  # seeded too few; the parent sizes this from --duration
        await stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=session_id, reason="bench"),
            metadata=_bearer(slot["access_token"]),
            timeout=_CALL_TIMEOUT,
        )
        return OK

    return op


def _logout(stub: Stub, slot: Slot) -> Op:
    refresh_tokens = iter(slot["refresh_tokens"])

    async def op() -> str:
        refresh_token = next(refresh_tokens, None)
        if refresh_token is None:
            return "EXHAUSTED"  # seeded too few; the caller sizes this from the window
        await stub.Logout(pb.LogoutRequest(refresh_token=refresh_token), timeout=_CALL_TIMEOUT)
        return OK

    return op


def _mixed(stub: Stub, slot: Slot, password: str) -> Op:
    validate = _validate(stub, lambda: str(slot["access_token"]))
    refresh = _refresh(stub, slot)
    login = _login(stub, itertools.cycle([slot["email"]]), password, slot)
    list_sessions = _list_sessions_any(stub, slot)
    spares = iter(slot["spares"])
    rng = random.Random(slot["seed"])  # noqa: S311 - a load mix, not a secret

    async def logout() -> str:
        spare = next(spares, None)
        if spare is None:
            return "EXHAUSTED"
        await stub.Logout(pb.LogoutRequest(refresh_token=spare), timeout=_CALL_TIMEOUT)
        return OK

    ops: dict[str, Op] = {
        "validate": validate,
        "refresh": refresh,
        "login": login,
        "list_sessions": list_sessions,
    }

    async def op() -> str:
        draw = rng.random()
        for name, threshold in MIX:
            if draw < threshold:
                return await ops[name]()
        return await logout()

    return op


def _list_sessions_any(stub: Stub, slot: Slot) -> Op:
    async def op() -> str:
        await stub.ListSessions(
            pb.ListSessionsRequest(page_size=20),
            metadata=_bearer(slot["access_token"]),
            timeout=_CALL_TIMEOUT,
        )
        return OK

    return op


def _empty(channel: grpc.aio.Channel) -> Op:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(EMPTY_METHOD)

    async def op() -> str:
        await call(b"", timeout=_CALL_TIMEOUT)
        return OK

    return op


def _pg_refresh(pg: asyncpg.Pool, slot: Slot) -> Op:
    """The statement one Refresh runs (its common case), without gRPC or JWT;
    on sessions no other call of this slot is refreshing, like `_refresh_idle`."""
    idle = collections.deque(slot["refresh_tokens"])
    # Refresh lineage's step, as the server records it unless AUTHSVC_REFRESH_LINEAGE=false.
    lineage = slot.get("lineage", True)

    async def op() -> str:
        if not idle:
            return "NO_IDLE_SESSION"
        presented = idle.popleft()
        user_id = routed_user(presented)  # the seeder's tokens are routed
        if user_id is None:
            return "UNROUTED_TOKEN"
        successor = new_refresh_token(user_id)
        now = datetime.now(UTC)
        row = await pg.fetchrow(
            _ROTATE_IF_CURRENT,
            hash_refresh_token(presented),
            now,
            now + _IDLE_TIMEOUT,
            os.urandom(60),  # the size of a sealed successor box
            uuid.uuid4(),
            hash_refresh_token(successor),
            "bench-kid",  # the signing key the session's latest access token names
            "127.0.0.1",
            "bench",
            lineage,
            os.urandom(32),  # an idempotency key's hash: the clients send a key every time
            user_id,
        )
        if row is None:
            return "UNKNOWN_TOKEN"
        if row["idle_expires_at"] is None:
            return "NOT_ROTATED"
        idle.append(successor)
        return OK

    return op


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection to the peer, as a browser's session holds: GET
    with a cookie, the status and body back. Opened on first use and after a failure."""

    __slots__ = ("_host", "_port", "_reader", "_writer")

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._host, self._port = host, int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, cookie: str) -> tuple[int, bytes]:
        try:
            return await self._get(path, cookie)
        except BaseException:
            if self._writer is not None:
                self._writer.close()
            self._reader = self._writer = None
            raise

    async def _get(self, path: str, cookie: str) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        reader = self._reader
        self._writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self._host}\r\nCookie: {peer.COOKIE}={cookie}"
            "\r\n\r\n".encode("latin-1")
        )
        status = int((await reader.readline()).split()[1])
        length, chunked = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
        if not chunked:
            return status, await reader.readexactly(length)
        body = bytearray()
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readline()  # the empty trailer section
        return status, bytes(body)


async def _peer_call(http: _HttpConnection, path: str, cookie: str) -> tuple[str, object]:
    """(OK or what went wrong, the decoded JSON body)."""
    try:
        status, body = await http.get(path, cookie)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        return type(exc).__name__, None
    if status != 200:
        return f"HTTP_{status}", None
    return OK, json.loads(body)


def _peer_get_session(http: _HttpConnection, slot: Slot) -> Op:
    """better-auth's getSession: the session and user of a session cookie, or null."""
    next_cookie = itertools.cycle(slot["cookies"]).__next__

    async def op() -> str:
        code, body = await _peer_call(http, peer.GET_SESSION, next_cookie())
        if code == OK and not (isinstance(body, dict) and body.get("session")):
            return "NO_SESSION"
        return code

    return op


def _peer_list_sessions(http: _HttpConnection, slot: Slot) -> Op:
    """better-auth's listSessions: every live session of the cookie's user (20 seeded)."""

    async def op() -> str:
        code, body = await _peer_call(http, peer.LIST_SESSIONS, slot["cookie"])
        if code == OK and not (isinstance(body, list) and len(body) == 20):
            return "SHORT_LIST"
        return code

    return op


async def _burst_rounds(stub: Stub, slot: Slot, recorder: _Recorder) -> None:
    """Rounds of BURST concurrent refreshes of one token; every one must succeed
    and all must be handed the same successor (one chain, no fork)."""
    while time.monotonic() < recorder.end:
        token = slot["refresh_token"]
        successors: list[str] = []

        def one(token: str = token, successors: list[str] = successors) -> Op:
            async def op() -> str:
                request = pb.RefreshRequest(refresh_token=token)
                response = await stub.Refresh(request, timeout=_CALL_TIMEOUT)
                successors.append(response.refresh_token)
                return OK

            return op

        codes = await asyncio.gather(*(recorder.timed(one()) for _ in range(BURST)))
        if len(set(successors)) > 1:
            recorder.result.codes["FORKED_CHAIN"] += 1
        if not successors or any(code != OK for code in codes):
            return  # the token is spent or the session revoked: this slot is done
        slot["refresh_token"] = successors[0]
