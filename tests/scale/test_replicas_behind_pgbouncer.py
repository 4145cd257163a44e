"""Three `authsvc serve` processes behind one PgBouncer in transaction pooling mode.

Every query of the replicas goes through PgBouncer but the revocation feed's LISTEN and
the session-level locks (migrations, the sweep), which take the direct URL. The rest of
the correctness tests run through PgBouncer too: `make pytest` runs them again with
--through-pgbouncer (tests/conftest.py, DatabaseRoute).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
import pytest_asyncio

from authsvc.service_keys import mint_service_key
from authsvc.store.pool import SESSION_LOCKS_APPLICATION_NAME, Pool
from authsvc.store.revocations import APPLICATION_NAME as FEED_APPLICATION_NAME
from authsvc.v1 import auth_service_pb2 as pb
from bench.pgbouncer import PgBouncer
from tests.conftest import NewDatabase
from tests.helpers import Stub, bearer, error_info, login, refresh, register
from tests.processes import POLL_INTERVAL, WAIT, ServerProcess, server_group

pytestmark = pytest.mark.asyncio

REPLICAS = 3
WRONG = "not the password"
# The default per-account limit of failed logins in a window.
ACCOUNT_LIMIT = 5
# How the test's own direct connections show in pg_stat_activity, so they can be told apart.
TEST_APPLICATION_NAME = "authsvc test"

Watch = grpc.aio.UnaryStreamCall[pb.WatchRevocationsRequest, pb.WatchRevocationsResponse]


@dataclass(frozen=True, slots=True)
class Replicas:
    servers: tuple[ServerProcess, ...]
    service_key: str  # a key WatchRevocations accepts
    bouncer: PgBouncer
    pool: Pool  # the test's own view of the database, direct


@pytest_asyncio.fixture
async def replicas(new_database: NewDatabase, pgbouncer: PgBouncer) -> AsyncIterator[Replicas]:
    """Three replicas cold-started together behind PgBouncer on one empty database."""
    dsn = await new_database()
    key, entry = mint_service_key("verifier")
    settings = {
        "AUTHSVC_DATABASE_POOLER": "pgbouncer-transaction",
        "AUTHSVC_LISTEN_DATABASE_URL": dsn,
        "AUTHSVC_SERVICE_KEYS": entry,
        "AUTHSVC_REVOCATION_HEARTBEAT_INTERVAL": "100ms",
    }
    async with server_group() as group:
        servers = await asyncio.gather(
            *(group.start(pgbouncer.dsn_through(dsn), **settings) for _ in range(REPLICAS))
        )
        await asyncio.gather(*(server.until_serving() for server in servers))
        async with asyncpg.create_pool(
            dsn, min_size=0, max_size=2, server_settings={"application_name": TEST_APPLICATION_NAME}
        ) as pool:
            yield Replicas(tuple(servers), key, pgbouncer, pool)


async def failed_login(stub: Stub) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Login(pb.LoginRequest(email="alice@example.com", password=WRONG))
    return error_info(caught.value)[1]


async def next_event(watch: Watch, event: str) -> pb.WatchRevocationsResponse:
    """The next message on the stream that carries `event` (revocation, heartbeat)."""
    async with asyncio.timeout(WAIT):
        while True:
            message = await watch.read()
            assert isinstance(message, pb.WatchRevocationsResponse), message
            if message.WhichOneof("event") == event:
                return message


async def next_revocation(watch: Watch) -> pb.Revocation:
    return (await next_event(watch, "revocation")).revocation


async def subscribed(server: ServerProcess, service_key: str) -> Watch:
    """A WatchRevocations stream on `server` that has had its first heartbeat, so it is live.
    A replica refuses subscribers (UNAVAILABLE) until its feed has caught up once, which may
    be a moment after it reports SERVING: that refusal is waited out, bounded by WAIT."""
    async with asyncio.timeout(WAIT):
        while True:
            watch: Watch = server.stub.WatchRevocations(
                pb.WatchRevocationsRequest(after_cursor=0), metadata=bearer(service_key)
            )
            try:
                await next_event(watch, "heartbeat")
            except grpc.aio.AioRpcError as refused:
                if refused.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(POLL_INTERVAL)
                continue
            return watch


async def test_concurrent_refreshes_through_three_replicas_share_one_successor(
    replicas: Replicas,
) -> None:
    user = await register(replicas.servers[0].stub)

    answers = await asyncio.gather(
        *(refresh(replicas.servers[n % REPLICAS].stub, user.refresh_token) for n in range(30))
    )

    assert len({answer.refresh_token for answer in answers}) == 1
    assert {answer.session_id for answer in answers} == {user.session_id}


async def test_parallel_guesses_through_three_replicas_get_exactly_the_limit(
    replicas: Replicas,
) -> None:
    await register(replicas.servers[0].stub)

    reasons = await asyncio.gather(*(failed_login(server.stub) for server in replicas.servers * 8))

    assert sorted(reasons) == (
        ["INVALID_CREDENTIALS"] * ACCOUNT_LIMIT + ["RATE_LIMITED"] * (24 - ACCOUNT_LIMIT)
    )


async def test_a_revocation_through_one_replica_reaches_watchers_of_the_other_two(
    replicas: Replicas,
) -> None:
    revoker, *watched = replicas.servers
    watches = await asyncio.gather(
        *(subscribed(server, replicas.service_key) for server in watched)
    )
    phone = await register(revoker.stub)
    laptop = await login(revoker.stub)

    await revoker.stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=phone.session_id), metadata=bearer(laptop.access_token)
    )

    seen = await asyncio.gather(*map(next_revocation, watches))
    for watch in watches:
        watch.cancel()
    assert [revocation.session_id for revocation in seen] == [phone.session_id] * 2


async def test_only_the_feed_and_session_locks_reach_postgresql_past_pgbouncer(
    replicas: Replicas,
) -> None:
    user = await register(replicas.servers[0].stub)
    await asyncio.gather(*(refresh(s.stub, user.refresh_token) for s in replicas.servers))

    pooled = {int(row["remote_pid"]) for row in replicas.bouncer.show("SERVERS")}
    backends = await replicas.pool.fetch(
        "SELECT pid, application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name <> $1",
        TEST_APPLICATION_NAME,
    )
    direct = sorted(row["application_name"] for row in backends if row["pid"] not in pooled)
    through_bouncer = [row for row in backends if row["pid"] in pooled]
    assert through_bouncer, "no server connection of PgBouncer's is on the database"
    # One feed per replica; the lock pools may have closed their idle connections.
    assert direct.count(FEED_APPLICATION_NAME) == REPLICAS, direct
    assert set(direct) <= {FEED_APPLICATION_NAME, SESSION_LOCKS_APPLICATION_NAME}, direct
