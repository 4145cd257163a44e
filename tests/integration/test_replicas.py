"""Several replicas on one database: `authsvc serve` processes and `authsvc` commands.

Each cluster is three server processes started together on a fresh, empty
database, so their cold starts race each other for the migrations and the
first signing key. With --through-pgbouncer (make pytest's second run), every replica
and command reaches the database through one PgBouncer in transaction pooling mode.
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import jwt
import pytest
import pytest_asyncio

from authsvc.store.migrate import bundled_migrations
from authsvc.store.pool import Pool
from authsvc.store.sweep import SWEEP_LOCK_KEY
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import DatabaseRoute, Launch, NewDatabase, pool_on
from tests.helpers import (
    backends_waiting_for_locks,
    bearer,
    error_info,
    login,
    refresh,
    register,
    validate,
)
from tests.processes import (
    CommandRun,
    ServerProcess,
    authsvc_env,
    eventually,
    run_authsvc,
    server_group,
    sessions_for_sweep,
)

pytestmark = pytest.mark.asyncio


REPLICAS = 3
# Replicas reload signing keys this often here (the default is 60s), so a
# rotation reaches every replica within KEY_PICKUP_BOUND.
KEY_RELOAD_INTERVAL = "1s"
KEY_PICKUP_BOUND = 15.0
_SWEPT = re.compile(r"(\d+) expired sessions")
_NOTHING_DONE = "another replica is sweeping; nothing done"


# `env_on(dsn, **settings)`: a replica's or command's environment for the database `dsn`.
EnvOn = Callable[..., dict[str, str]]


@pytest.fixture
def env_on(database_route: DatabaseRoute) -> EnvOn:
    """`authsvc_env` for a test database, through PgBouncer when the run is."""

    def env(dsn: str, **settings: str) -> dict[str, str]:
        return authsvc_env(database_route.service_dsn(dsn), **database_route.env(dsn), **settings)

    return env


@dataclass(frozen=True, slots=True)
class Cluster:
    dsn: str
    env: dict[str, str]  # the replicas' environment, for commands on their database
    replicas: tuple[ServerProcess, ...]
    pool: Pool  # the test's own view of the shared database, direct


@pytest_asyncio.fixture
async def cluster(
    new_database: NewDatabase, database_route: DatabaseRoute, env_on: EnvOn
) -> AsyncIterator[Cluster]:
    """Three replicas cold-started together on one empty database, all SERVING."""
    dsn = await new_database()
    env = env_on(dsn, AUTHSVC_KEY_RELOAD_INTERVAL=KEY_RELOAD_INTERVAL)
    settings = {**database_route.env(dsn), "AUTHSVC_KEY_RELOAD_INTERVAL": KEY_RELOAD_INTERVAL}
    async with server_group() as group:
        replicas = await asyncio.gather(
            *(group.start(database_route.service_dsn(dsn), **settings) for _ in range(REPLICAS))
        )
        await asyncio.gather(*(replica.until_serving() for replica in replicas))
        async with pool_on(dsn, max_size=2) as pool:
            yield Cluster(dsn, env, tuple(replicas), pool)


async def lock_waiters_reach(pool: Pool, count: int) -> bool:
    """Whether `count` backends of the pool's database are waiting for a lock (on any node
    of a Citus cluster)."""
    return await backends_waiting_for_locks(pool) >= count


def kid_of(access_token: str) -> str:
    kid = jwt.get_unverified_header(access_token)["kid"]
    assert isinstance(kid, str)
    return kid


async def active_kids(pool: Pool) -> list[str]:
    rows = await pool.fetch("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
    return [row["kid"] for row in rows]


# --- cold starts ------------------------------------------------------------------


async def test_simultaneous_cold_starts_apply_each_migration_once(cluster: Cluster) -> None:
    rows = await cluster.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")

    assert [row["version"] for row in rows] == [m.version for m in bundled_migrations()]


async def test_simultaneous_cold_starts_share_one_active_signing_key(cluster: Cluster) -> None:
    email = "ada@example.com"
    await register(cluster.replicas[0].stub, email=email)

    signed = [await login(replica.stub, email=email) for replica in cluster.replicas]

    kids = await active_kids(cluster.pool)
    assert len(kids) == 1
    assert [kid_of(s.access_token) for s in signed] == kids * REPLICAS


# --- one session seen through several replicas --------------------------------------


async def test_concurrent_refreshes_across_replicas_share_one_successor_and_keep_the_session(
    cluster: Cluster,
) -> None:
    user = await register(cluster.replicas[0].stub)

    answers = await asyncio.gather(
        *(refresh(cluster.replicas[n % REPLICAS].stub, user.refresh_token) for n in range(30))
    )

    live_tokens = await cluster.pool.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND rotated_at IS NULL",
        uuid.UUID(user.session_id),
    )
    validations = [
        await validate(replica.stub, answers[-1].access_token) for replica in cluster.replicas
    ]
    assert len({answer.refresh_token for answer in answers}) == 1
    assert {answer.session_id for answer in answers} == {user.session_id}
    assert live_tokens == 1
    assert [v.active for v in validations] == [True] * REPLICAS, validations


async def test_session_revoked_through_one_replica_is_refused_by_the_others_at_once(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.replicas
    phone = await register(a.stub)
    laptop = await login(a.stub)

    await a.stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=phone.session_id), metadata=bearer(laptop.access_token)
    )

    validation = await validate(b.stub, phone.access_token)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await refresh(c.stub, phone.refresh_token)
    assert (validation.active, validation.inactive_reason) == (False, "SESSION_REVOKED")
    code, reason, _ = error_info(refused.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


# --- key rotation through the CLI ----------------------------------------------------


async def rotate_keys(cluster: Cluster) -> str:
    """`authsvc keys rotate` on the cluster's database, with the replicas' key reload
    interval (the new key signs one interval after the rotation); the new kid."""
    run = await run_authsvc(
        "keys",
        "rotate",
        env=cluster.env,
    )
    assert run.code == 0, run.stderr
    [kid] = await active_kids(cluster.pool)
    return kid


async def signs_with(replica: ServerProcess, email: str, kid: str) -> bool:
    """Whether an access token the replica mints now carries `kid`."""
    return kid_of((await login(replica.stub, email=email)).access_token) == kid


async def until_every_replica_signs_with(cluster: Cluster, email: str, kid: str) -> None:
    """Wait, within KEY_PICKUP_BOUND per replica, until each replica signs with `kid`."""
    for replica in cluster.replicas:
        await eventually(
            functools.partial(signs_with, replica, email, kid), within=KEY_PICKUP_BOUND
        )


async def test_key_rotated_through_the_cli_signs_on_every_replica_after_a_reload(
    cluster: Cluster,
) -> None:
    email = "ada@example.com"
    await register(cluster.replicas[0].stub, email=email)
    [old_kid] = await active_kids(cluster.pool)

    new_kid = await rotate_keys(cluster)

    await until_every_replica_signs_with(cluster, email, new_kid)
    assert new_kid != old_kid


async def test_tokens_signed_before_a_cli_rotation_keep_validating_on_every_replica(
    cluster: Cluster,
) -> None:
    email = "ada@example.com"
    await register(cluster.replicas[0].stub, email=email)
    before = [await login(replica.stub, email=email) for replica in cluster.replicas]
    # Rotated, and reloaded by every replica: the old key is now a retired one.
    await until_every_replica_signs_with(cluster, email, await rotate_keys(cluster))

    answers = []
    for replica in cluster.replicas:
        for signed in before:
            validation = await validate(replica.stub, signed.access_token)
            answers.append((validation.active, validation.inactive_reason))
    assert answers == [(True, "")] * (REPLICAS * REPLICAS)


async def test_concurrent_cli_key_rotations_both_succeed_and_leave_one_active_key(
    new_database: NewDatabase, env_on: EnvOn
) -> None:
    dsn = await new_database()
    setup = await run_authsvc("keys", "rotate", env=env_on(dsn))
    assert setup.code == 0, setup.stderr
    async with pool_on(dsn, max_size=2) as pool:
        async with pool.acquire() as conn, conn.transaction():
            # Hold the active key's row, so both rotations are waiting to retire it.
            await conn.execute("SELECT 1 FROM signing_keys WHERE retired_at IS NULL FOR UPDATE")
            rotations = asyncio.gather(
                run_authsvc("keys", "rotate", env=env_on(dsn)),
                run_authsvc("keys", "rotate", env=env_on(dsn)),
            )
            await eventually(functools.partial(lock_waiters_reach, pool, 2))

        runs = await rotations

        kids = await active_kids(pool)
    assert [run.code for run in runs] == [0, 0], [run.stderr[-400:] for run in runs]
    assert len(kids) == 1
    assert sum(kids[0] in run.stdout for run in runs) == 1


# --- sweeping: one replica at a time ----------------------------------------------------


async def session_ids(pool: Pool) -> set[str]:
    """Sessions not marked ended: a sweep marks expired ones (tombstones), it deletes none."""
    rows = await pool.fetch("SELECT id FROM sessions WHERE revoked_at IS NULL")
    return {str(row["id"]) for row in rows}


def swept(run: CommandRun) -> int:
    """Expired sessions a `sweep` run reports marking ended (0 if it found the lock taken)."""
    assert run.code == 0, run.stderr
    if _NOTHING_DONE in run.stdout:
        return 0
    match = _SWEPT.search(run.stdout)
    assert match, run.stdout
    return int(match[1])


async def test_sweep_skips_while_another_replica_holds_the_sweep_lock(
    new_database: NewDatabase, launch: Launch, env_on: EnvOn
) -> None:
    dsn = await new_database(migrated=True)
    live = await sessions_for_sweep(launch, dsn, expired=3, live=1)
    async with pool_on(dsn, max_size=2) as pool:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SWEEP_LOCK_KEY)

            while_held = await run_authsvc("sweep", env=env_on(dsn))

            left_while_held = await session_ids(pool)
        after_release = await run_authsvc("sweep", env=env_on(dsn))
        left_after_release = await session_ids(pool)
    assert while_held.code == 0, while_held.stderr
    assert _NOTHING_DONE in while_held.stdout
    assert len(left_while_held) == 3 + 1
    assert swept(after_release) == 3
    assert left_after_release == set(live)


async def test_concurrent_sweeps_mark_each_expired_session_ended_once(
    new_database: NewDatabase, launch: Launch, env_on: EnvOn
) -> None:
    dsn = await new_database(migrated=True)
    # Small batches: a pass takes several statements, so the runs overlap longer.
    env = env_on(dsn, AUTHSVC_SWEEP_BATCH_SIZE="2")
    live = await sessions_for_sweep(launch, dsn, expired=12, live=2)
    async with pool_on(dsn, max_size=2) as pool:
        runs = await asyncio.gather(*(run_authsvc("sweep", env=env) for _ in range(REPLICAS)))

        left = await session_ids(pool)
    assert sum(swept(run) for run in runs) == 12
    assert left == set(live)
