"""WatchRevocations on real servers and PostgreSQL: the replay (a snapshot, or everything
after a cursor), live revocations from any replica, heartbeats carrying the cursor, a slow
subscriber cut off without holding up others, and who may subscribe."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.service_keys import mint_service_key
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import Launch, Launched
from tests.helpers import ACCESS_TOKEN_TTL, CLOCK_SKEW, Stub, bearer, error_info, login, register
from tests.processes import WAIT

pytestmark = pytest.mark.asyncio

Watch = grpc.aio.UnaryStreamCall[pb.WatchRevocationsRequest, pb.WatchRevocationsResponse]

# Heartbeats this often here, so that a test waiting for the next one waits briefly.
HEARTBEAT = "100ms"
ROOT = Path(__file__).resolve().parents[2]
REVOCATION_FEED_DOC = ROOT / "docs/revocation-feed.md"


@dataclass(frozen=True, slots=True)
class Feed:
    """A ready server whose revocation feed is current, and a service key it accepts."""

    launched: Launched
    key: str

    @property
    def stub(self) -> Stub:
        return self.launched.stub

    def watch(self, after_cursor: int = 0, *, stub: Stub | None = None) -> Watch:
        call: Watch = (stub or self.stub).WatchRevocations(
            pb.WatchRevocationsRequest(after_cursor=after_cursor), metadata=bearer(self.key)
        )
        return call


async def _feed(launch: Launch, *, buffer: str = "10000", subscribers: str = "1000") -> Feed:
    key, entry = mint_service_key("verifier")
    launched = await launch(
        service_keys=entry,
        revocation_heartbeat_interval=HEARTBEAT,
        revocation_subscriber_buffer=buffer,
        revocation_max_subscribers=subscribers,
    )
    revocation_feed = launched.server.revocation_feed
    assert revocation_feed is not None
    async with asyncio.timeout(WAIT):
        await revocation_feed.wait_current()
    return Feed(launched, key)


async def _next(watch: Watch) -> pb.WatchRevocationsResponse:
    async with asyncio.timeout(WAIT):
        message = await watch.read()
    assert isinstance(message, pb.WatchRevocationsResponse), message
    return message


async def _until_heartbeat(watch: Watch) -> tuple[list[pb.Revocation], pb.Heartbeat]:
    """The revocations before the next heartbeat, and that heartbeat."""
    revocations = []
    while (message := await _next(watch)).WhichOneof("event") == "revocation":
        revocations.append(message.revocation)
    return revocations, message.heartbeat


async def _revocation(watch: Watch) -> pb.Revocation:
    """The next revocation, past any heartbeats."""
    while (message := await _next(watch)).WhichOneof("event") != "revocation":
        pass
    return message.revocation


async def _revoke(stub: Stub, count: int, *, email: str = "alice@example.com") -> list[str]:
    """Sign `email` in `count` + 1 times and revoke all but the last session, one at a time
    (so each is a revocation of its own); return the revoked session ids."""
    sessions = [await register(stub, email=email)]
    for _ in range(count):
        sessions.append(await login(stub, email=email))
    keeper = sessions.pop()
    for session in sessions:
        await stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=session.session_id),
            metadata=bearer(keeper.access_token),
        )
    return [session.session_id for session in sessions]


async def _read_to_the_end(watch: Watch) -> None:
    async with asyncio.timeout(WAIT):
        while True:
            await _next(watch)


async def _failure(watch: Watch) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """How the stream ended, once every message before the end has been read."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _read_to_the_end(watch)
    return error_info(caught.value)


def _fenced_after(doc: Path, marker: str) -> str:
    """The body of the first fenced block after an HTML comment marker in `doc`."""
    match = re.search(rf"<!-- {marker}\b.*?-->\n```[a-z]*\n(.*?)```", doc.read_text(), re.DOTALL)
    assert match, f"{doc.name} has no block marked {marker}"
    return match[1]


async def _bash(script: str, **env: str) -> tuple[int, str, str]:
    """Run `script` in bash from the repository root, with `env` added to the environment."""
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_the_snapshot_holds_sessions_ended_within_the_token_lifetime_not_before(
    launch: Launch, clock: FrozenClock
) -> None:
    feed = await _feed(launch)
    [old] = await _revoke(feed.stub, 1, email="old@example.com")
    clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW + timedelta(seconds=1))
    [recent] = await _revoke(feed.stub, 1, email="recent@example.com")

    revocations, heartbeat = await _until_heartbeat(feed.watch(0))

    assert [r.session_id for r in revocations] == [recent]
    [revocation] = revocations
    assert revocation.reason == pb.SESSION_END_REASON_USER_REVOKED
    assert revocation.revoked_at.ToDatetime(tzinfo=clock.now().tzinfo) == clock.now()
    assert (
        revocation.tokens_expire_by.ToDatetime(tzinfo=clock.now().tzinfo)
        == clock.now() + ACCESS_TOKEN_TTL + CLOCK_SKEW
    )
    assert heartbeat.cursor == revocation.cursor
    assert old != recent


async def test_resuming_after_a_cursor_gets_exactly_the_revocations_missed(
    launch: Launch,
) -> None:
    feed = await _feed(launch)
    await _revoke(feed.stub, 2, email="before@example.com")
    first = feed.watch(0)
    _, heartbeat = await _until_heartbeat(first)
    first.cancel()
    missed = await _revoke(feed.stub, 3, email="while-away@example.com")

    revocations, caught_up = await _until_heartbeat(feed.watch(heartbeat.cursor))

    assert [r.session_id for r in revocations] == missed
    assert caught_up.cursor == revocations[-1].cursor


async def test_heartbeats_carry_the_latest_cursor(launch: Launch) -> None:
    feed = await _feed(launch)
    watch = feed.watch(0)
    await _until_heartbeat(watch)

    await _revoke(feed.stub, 1)
    revocation = await _revocation(watch)
    _, heartbeat = await _until_heartbeat(watch)

    assert heartbeat.cursor == revocation.cursor


async def test_a_revocation_on_one_replica_reaches_a_subscriber_of_another(
    launch: Launch,
) -> None:
    replica_b = await _feed(launch)
    replica_a = await _feed(launch)
    watch = replica_b.watch(0)
    await _until_heartbeat(watch)

    [revoked] = await _revoke(replica_a.stub, 1)

    assert (await _revocation(watch)).session_id == revoked


async def test_a_subscriber_that_stops_reading_is_cut_off_while_another_keeps_up(
    launch: Launch,
) -> None:
    # A ring of 16 and a client window of about 10 messages: 40 revocations overflow both.
    feed = await _feed(launch, buffer="16")
    address = f"127.0.0.1:{feed.launched.server.port}"
    # A small stream window that does not grow: the server's writes to it soon block.
    narrow = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(address, options=narrow) as channel:
        stalled = feed.watch(0, stub=auth_service_pb2_grpc.AuthServiceStub(channel))
        keeping_up = feed.watch(0)
        await _until_heartbeat(stalled)
        await _until_heartbeat(keeping_up)

        revoked = await _revoke(feed.stub, 40)
        received = [(await _revocation(keeping_up)).session_id for _ in revoked]

        code, reason, _ = await _failure(stalled)

    assert received == revoked
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW")


async def test_a_cursor_beyond_the_latest_is_an_invalid_field(launch: Launch) -> None:
    feed = await _feed(launch)
    [_] = await _revoke(feed.stub, 1)

    code, reason, metadata = await _failure(feed.watch(10**12))

    assert (code, reason, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "after_cursor"},
    )


async def test_subscribers_beyond_the_limit_are_refused_server_busy(launch: Launch) -> None:
    feed = await _feed(launch, subscribers="1")
    first = feed.watch(0)
    await _until_heartbeat(first)

    code, reason, _ = await _failure(feed.watch(0))

    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")


@pytest.mark.parametrize("credential", ["none", "a user's access token"])
async def test_a_caller_without_a_service_key_is_refused(launch: Launch, credential: str) -> None:
    feed = await _feed(launch)
    user = await register(feed.stub)
    metadata = bearer(user.access_token) if credential != "none" else ()

    code, reason, _ = await _failure(
        feed.stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=metadata)
    )

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "SERVICE_CREDENTIALS_REQUIRED")


async def test_a_graceful_stop_ends_streams_unavailable_so_subscribers_resume_elsewhere(
    launch: Launch,
) -> None:
    feed = await _feed(launch)
    watch = feed.watch(0)
    await _until_heartbeat(watch)

    stopping = asyncio.create_task(feed.launched.server.stop(timedelta(seconds=WAIT)))
    code, reason, _ = await _failure(watch)
    await stopping

    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_READY")


async def test_a_cursor_older_than_the_logs_retention_is_cursor_expired(
    launch: Launch, clock: FrozenClock
) -> None:
    feed = await _feed(launch)
    watch = feed.watch(0)
    await _until_heartbeat(watch)
    await _revoke(feed.stub, 2)
    kept = (await _revocation(watch)).cursor
    watch.cancel()
    clock.advance(feed.launched.server.config.effective_revocation_retention + timedelta(seconds=1))
    await feed.launched.server.sweeper.run_once()

    code, reason, _ = await _failure(feed.watch(kept))

    assert (code, reason) == (grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED")


async def test_grpcurl_streams_the_feed_through_reflection_with_a_service_key(
    launch: Launch,
) -> None:
    feed = await _feed(launch)
    [revoked] = await _revoke(feed.stub, 1)
    command = _fenced_after(REVOCATION_FEED_DOC, "revocation-feed-grpcurl")

    status, stdout, stderr = await _bash(
        command, KEY=feed.key, ADDR=f"127.0.0.1:{feed.launched.server.port}"
    )

    # grpcurl exits 64 + the gRPC code: -max-time ends the stream DEADLINE_EXCEEDED (4).
    assert status == 64 + 4, stderr
    revocation = stdout.find(f'"sessionId": "{revoked}"')
    assert -1 < revocation < stdout.find('"heartbeat"'), stdout
