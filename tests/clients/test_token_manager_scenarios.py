"""The TokenManager scenario table (clients/testdata/token_manager_scenarios.json), run
through AuthClient against the in-process server. The Node client's suite runs the same table
(clients/node/test/scenarios.ts); the table's "about" says what each step and check means.

RPCs are counted from the server's JSON access log by the x-request-id this runner's clients
send, so a count is what reached the service from the client under test, not what the other
device or the token thief sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from authsvc_client import (
    AuthClient,
    AuthsvcError,
    FileTokenStore,
    SessionExpired,
    SessionPage,
    TokenPair,
)

from authsvc.core.clock import FrozenClock
from authsvc.log_format import JsonFormatter
from authsvc.v1 import auth_service_pb2 as pb
from tests.clients.conftest import METHOD_PREFIX, REPO_ROOT
from tests.conftest import Launch, Launched
from tests.helpers import PASSWORD, bearer

TABLE_PATH = REPO_ROOT / "clients" / "testdata" / "token_manager_scenarios.json"
SCENARIOS: list[dict[str, Any]] = json.loads(TABLE_PATH.read_text(encoding="utf-8"))["scenarios"]
# An upper bound for a held refresh to arrive, not a timing assertion.
HELD_TIMEOUT = 10.0

_ran: set[str] = set()


class AccessLog(logging.Handler):
    """The server's access-log lines as JSON, as `serve` writes them (request ids included)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@contextmanager
def _access_log() -> Iterator[AccessLog]:
    logger = logging.getLogger("authsvc.access")
    handler, level = AccessLog(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class RefreshGate(grpc.aio.UnaryUnaryClientInterceptor):
    """Tags each call with an x-request-id of the scenario's, and on request holds Refresh
    answers (success or failure, after the server sent them) until released."""

    def __init__(self, tag: str) -> None:
        self._tag = tag
        self._sequence = 0
        self._is_holding = False
        # One per answer held and not yet released, oldest first.
        self._gates: list[asyncio.Event] = []
        self.held = 0
        self._arrived = asyncio.Condition()

    def hold(self) -> None:
        self._is_holding = True

    def release(self, count: int | None = None) -> None:
        """Let the oldest `count` held answers go on; all, and hold no more, without one."""
        if count is None:
            self._is_holding = False
            count = len(self._gates)
        assert count <= len(self._gates), f"{count} to release, {len(self._gates)} held"
        for gate in self._gates[:count]:
            gate.set()
        del self._gates[:count]

    async def wait_held(self, count: int) -> None:
        async with asyncio.timeout(HELD_TIMEOUT), self._arrived:
            await self._arrived.wait_for(lambda: self.held >= count)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        self._sequence += 1
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("x-request-id", f"{self._tag}-{self._sequence}")
        call = await continuation(
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            ),
            request,
        )
        method = details.method
        # grpc.aio hands interceptors the method name as bytes.
        if isinstance(method, bytes):
            method = method.decode()
        if not self._is_holding or method != f"{METHOD_PREFIX}Refresh":
            return call
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call  # a failure too is read by the client from the call, after the release
        if not self._is_holding:
            return call  # everything was released while the server answered
        gate = asyncio.Event()
        self._gates.append(gate)
        async with self._arrived:
            self.held += 1
            self._arrived.notify_all()
        await gate.wait()
        return call


class Runner:
    """Interprets one scenario's steps against a server, with one client at a time."""

    def __init__(
        self,
        scenario: dict[str, Any],
        launched: Launched,
        clock: FrozenClock,
        access_log: AccessLog,
        tmp: Path,
    ) -> None:
        self._scenario = scenario
        self._access_log = access_log
        self._launched = launched
        self._server_clock = clock
        self._client_now = clock.now()
        self._tag = f"s{uuid.uuid4().hex}"
        self._refreshes = RefreshGate(self._tag)
        self._store_path = tmp / "tokens.json"
        self._store = FileTokenStore(self._store_path)
        self._email = f"{self._tag}@example.com"
        self._sessions: dict[str, TokenPair] = {}
        self._signed_in: TokenPair | None = None
        self._ended: list[str] = []
        self._started: dict[str, asyncio.Task[Any]] = {}
        self._other: str | None = None
        self._exits = AsyncExitStack()
        self.client: AuthClient

    async def __aenter__(self) -> Runner:
        await self._new_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._refreshes.release()
        for task in self._started.values():
            task.cancel()
        await self._exits.aclose()

    async def _new_client(self) -> None:
        channel = await self._exits.enter_async_context(
            grpc.aio.insecure_channel(
                f"127.0.0.1:{self._launched.server.port}", interceptors=[self._refreshes]
            )
        )
        skew = timedelta(seconds=self._scenario.get("client", {}).get("refresh_skew_s", 60))
        self.client = AuthClient(
            channel,
            store=self._store,
            refresh_skew=skew,
            now=lambda: self._client_now,
            on_session_expired=self._on_session_expired,
        )

    def _on_session_expired(self, error: SessionExpired) -> None:
        self._ended.append(error.reason)

    async def _current(self) -> TokenPair:
        pair = await self.client.tokens.tokens()
        assert pair is not None, "the step needs a signed-in client"
        return pair

    def _label(self, pair: TokenPair | None) -> str | None:
        if pair is None:
            return None
        labels = [k for k, v in self._sessions.items() if v.session_id == pair.session_id]
        assert labels, f"tokens of a session no step signed in: {pair.session_id}"
        return labels[0]

    async def _other_device(self) -> str:
        """An access token of another session of the account, signed in on first use."""
        if self._other is None:
            response = await self._launched.stub.Login(
                pb.LoginRequest(email=self._email, password=PASSWORD)
            )
            self._other = response.access_token
        return self._other

    # --- steps ----------------------------------------------------------------------------

    async def run(self, step: dict[str, Any]) -> None:
        if "check" in step:
            await self._check(step["check"])
            return
        action = getattr(self, f"_do_{step['do']}", None)
        assert action is not None, f"unknown step {step['do']!r}"
        await action(step)

    async def _do_sign_in(self, step: dict[str, Any]) -> None:
        if not self._sessions:
            pair = await self.client.register(self._email, PASSWORD)
        else:
            pair = await self.client.login(self._email, PASSWORD)
        self._sessions[step["session"]] = pair
        self._signed_in = pair

    async def _do_set_clock(self, step: dict[str, Any]) -> None:
        pair = await self._current()
        self._client_now = pair.access_token_expires_at + timedelta(seconds=step["to_expiry_s"])

    async def _do_expire_on_server(self, step: dict[str, Any]) -> None:
        pair = await self._current()
        past = pair.access_token_expires_at + timedelta(seconds=1) - self._server_clock.now()
        self._server_clock.advance(max(past, timedelta(0)))

    async def _do_revoke(self, step: dict[str, Any]) -> None:
        session_id = self._sessions[step["session"]].session_id
        await self._launched.stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=str(session_id)),
            metadata=bearer(await self._other_device()),
        )

    async def _do_steal_refresh_token(self, step: dict[str, Any]) -> None:
        pair = await self._current()
        await self._launched.stub.Refresh(pb.RefreshRequest(refresh_token=pair.refresh_token))

    async def _do_hold_refreshes(self, step: dict[str, Any]) -> None:
        self._refreshes.hold()

    async def _do_release_refreshes(self, step: dict[str, Any]) -> None:
        self._refreshes.release(step.get("count"))

    async def _do_await_held(self, step: dict[str, Any]) -> None:
        await self._refreshes.wait_held(step["count"])

    async def _do_call(self, step: dict[str, Any]) -> None:
        count = step.get("count", 1)
        await self._act(step, lambda: asyncio.gather(*(self._one_call() for _ in range(count))))

    async def _one_call(self) -> SessionPage | BaseException:
        try:
            return await self.client.list_sessions()
        except AuthsvcError as exc:
            return exc

    async def _do_refresh(self, step: dict[str, Any]) -> None:
        async def refresh() -> list[TokenPair | BaseException]:
            try:
                return [await self.client.refresh()]
            except AuthsvcError as exc:
                return [exc]

        await self._act(step, refresh)

    async def _do_finish(self, step: dict[str, Any]) -> None:
        self._expect(step.get("expect"), await self._started.pop(step["id"]))

    async def _do_restart_client(self, step: dict[str, Any]) -> None:
        await self.client.close()
        self._store = FileTokenStore(self._store_path)  # a new process reads the file afresh
        await self._new_client()

    async def _act(self, step: dict[str, Any], act: Callable[[], Awaitable[list[Any]]]) -> None:
        if "start" in step:
            assert "expect" not in step, "a started step's outcome is expected at its finish"

            async def outcome() -> list[Any]:
                return await act()

            self._started[step["start"]] = asyncio.ensure_future(outcome())
            # Let it run up to its first wait, as a caller that went ahead would.
            await asyncio.sleep(0)
            return
        self._expect(step.get("expect"), await act())

    def _expect(self, expect: dict[str, Any] | None, outcomes: list[Any]) -> None:
        if expect is None:
            return
        if "ok" in expect:
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            assert (len(outcomes), failures) == (expect["ok"], [])
        elif "error" in expect:
            reasons = [getattr(o, "reason", repr(o)) for o in outcomes]
            assert reasons == [expect["error"]] * len(outcomes)
        elif "session" in expect:
            [pair] = outcomes
            assert isinstance(pair, TokenPair), repr(pair)
            assert self._label(pair) == expect["session"]
        else:
            raise AssertionError(f"unknown expectation {expect!r}")

    async def _check(self, check: dict[str, Any]) -> None:
        current = await self.client.tokens.tokens()
        for key, want in check.items():
            if key == "rpcs":
                await self._check_rpcs(want)
            elif key == "current":
                assert self._label(current) == want
            elif key == "rotated":
                assert current is not None
                assert self._signed_in is not None
                assert (current.access_token != self._signed_in.access_token) == want
            elif key == "ended":
                assert self._ended == want
            elif key == "persisted":
                assert want in ("current", None), f"unknown persisted {want!r}"
                assert await self._store.load() == (current if want == "current" else None)
            else:
                raise AssertionError(f"unknown check {key!r}")

    async def _check_rpcs(self, want: dict[str, int]) -> None:
        counted = {
            method: sum(
                1
                for line in self._access_log.lines
                if line.get("rpc") == METHOD_PREFIX + method
                and str(line.get("request_id", "")).startswith(f"{self._tag}-")
            )
            for method in want
        }
        assert counted == want


@pytest_asyncio.fixture
async def access_log() -> AsyncIterator[AccessLog]:
    with _access_log() as log:
        yield log


@pytest.mark.asyncio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
async def test_token_manager_scenario(
    scenario: dict[str, Any],
    launch: Launch,
    clock: FrozenClock,
    access_log: AccessLog,
    tmp_path: Path,
) -> None:
    _ran.add(scenario["name"])
    launched = await launch(**scenario.get("server", {}))
    async with Runner(scenario, launched, clock, access_log, tmp_path) as runner:
        for number, step in enumerate(scenario["steps"]):
            try:
                await runner.run(step)
            except AssertionError as exc:
                raise AssertionError(f"step {number} {step}: {exc}") from exc


def test_every_scenario_in_the_table_ran() -> None:
    # Runs after the scenarios (pytest keeps file order): a table row no run reached fails here.
    assert _ran == {s["name"] for s in SCENARIOS}
