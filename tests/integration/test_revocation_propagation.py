"""Revocations reach every replica: three `authsvc serve` processes on one database, each
with its own revocation feed, one of them revoking, all of them answering ValidateToken."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio

from authsvc.store.pool import Pool
from authsvc.store.revocations import APPLICATION_NAME
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewDatabase, pool_on
from tests.helpers import Tokens, bearer, sign_in
from tests.processes import ServerProcess, eventually, server_group

pytestmark = pytest.mark.asyncio

REPLICAS = 3
SESSIONS = 7
# The listeners are cut before this revocation (of SESSIONS - 1).
CUT_BEFORE = 3
# A bound on one ValidateToken that the cache answers; one that waits on a locked table
# hits it instead (not a timing assertion: it only separates "answered" from "blocked").
ANSWER_BOUND = 2.0


@dataclass(frozen=True, slots=True)
class Cluster:
    replicas: tuple[ServerProcess, ...]
    pool: Pool


@pytest_asyncio.fixture
async def cluster(new_database: NewDatabase) -> AsyncIterator[Cluster]:
    dsn = await new_database(migrated=True)
    async with server_group() as group:
        replicas = await asyncio.gather(*(group.start_ready(dsn) for _ in range(REPLICAS)))
        async with pool_on(dsn, max_size=3) as pool:
            yield Cluster(tuple(replicas), pool)


async def is_active(replica: ServerProcess, session: Tokens) -> bool:
    response = await replica.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=session.access_token)
    )
    return bool(response.active)


async def inactive_everywhere(cluster: Cluster, session: Tokens) -> bool:
    return not any([await is_active(replica, session) for replica in cluster.replicas])


async def cut_listeners(pool: Pool) -> int:
    """Terminate every replica's feed connection; how many there were."""
    cut = await pool.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    return len(cut)


async def answers_without_the_sessions_table(replica: ServerProcess, session: Tokens) -> bool:
    """Whether the replica answers ValidateToken for the session while `sessions` is locked:
    only from its cache, since a read would wait for the lock."""
    try:
        await replica.stub.ValidateToken(
            pb.ValidateTokenRequest(access_token=session.access_token), timeout=ANSWER_BOUND
        )
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            return False
        raise
    return True


async def test_a_revocation_reaches_every_replica_across_cut_listeners(cluster: Cluster) -> None:
    first = cluster.replicas[0]
    caller, *others = await sign_in(first.stub, SESSIONS)
    for replica in cluster.replicas:
        for session in (caller, *others):
            assert await is_active(replica, session)
    revoked: list[Tokens] = []

    for number, session in enumerate(others, start=1):
        if number == CUT_BEFORE:
            assert await cut_listeners(cluster.pool) == REPLICAS
        await first.stub.RevokeSession(
            pb.RevokeSessionRequest(session_id=session.session_id),
            metadata=bearer(caller.access_token),
        )
        revoked.append(session)

        # The revoking replica knows before it answers; the others, soon after.
        assert not await is_active(first, session)
        await eventually(functools.partial(inactive_everywhere, cluster, session))
        for earlier in revoked:
            assert await inactive_everywhere(cluster, earlier)

    async with cluster.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        for replica in cluster.replicas:
            # Once its feed has reconnected and caught up, its cache answers again.
            await eventually(functools.partial(answers_without_the_sessions_table, replica, caller))
            assert await is_active(replica, caller)
            assert not any([await is_active(replica, session) for session in revoked])
