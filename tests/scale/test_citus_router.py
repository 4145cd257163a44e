"""Every statement the hot RPCs send is a router query on Citus: one task on one worker.

A real server runs on a Citus coordinator with two workers, on a database the real
migrations made (0028 distributes it). Its pool logs every statement it sends (asyncpg's
query logger), and each RPC below is made for an account on each worker; then every
statement that RPC sent is EXPLAINed on the coordinator with the very parameters it was
sent with (tests/scale/citus_router.py). Each Citus scan in each plan, distributed
subplans too, must have one task on one node. So a statement added to Login (or any path
here) later is checked without a line changed here.

Work the coordinator does on its own plain tables is allowed; in these paths it is the
audit trail (`audit_events`: the events Login, Refresh's reuse, RevokeSession and Logout
append, some from the router CTE of the statement that ended the sessions) and the
revocation log (`SELECT revocation_log_append_endings(...)`, a statement of its own after
every ending; it touches no distributed table).

Refresh's rotation is one call of a function (migration 0027) that Citus delegates whole to
the user's worker (migration 0028 distributes it by its user argument): its plan is one
task on that worker. As a statement of CTEs it was not a router query: Citus planned each
modifying CTE as a subplan and the successor's INSERT ... SELECT through the coordinator.

Statements that are not single-shard on purpose:
- Refresh with a legacy token (issued before its prefix named the user): the one lookup of
  its user by hash alone (`store/sessions.py` `_TOKEN_OWNER`) runs on every shard, each
  through its index; the statements after it are routed. Checked here: it is the only one.
- Register: the email claim (`user_emails`, by email) and the account's insert (`users`,
  by id) are each a router statement, but on two shards of one transaction (two-phase
  commit): an email and its account's id hash apart.
- ValidateToken, GetSession: only when the routed read finds nothing, the lookup of the
  session by id alone tells a token naming another user's session (made with a signing
  key) from a swept one.
- AdminService lookups of a session by its id alone (GetSession, GetSessionLineage): the
  operator knows no user.
- Bulk revocation (AdminService.RevokeSessions): a filter over every user's sessions.
- The sweeper: expired rows of every user, in small batches.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
import pytest_asyncio

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.domain.refresh_tokens import hash_refresh_token
from authsvc.store import sessions as session_sql
from authsvc.store.migrate import apply_migrations
from authsvc.store.pool import _init_connection, _PooledConnection
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import READY_TIMEOUT, make_config
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, refresh, register
from tests.scale.citus_cluster import CitusCluster
from tests.scale.citus_router import Explained, explain

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Not planned by anyone: asyncpg's transaction control, which EXPLAIN cannot take.
_TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)
# Registering until the accounts cover both workers: each lands on either by its id's hash.
_MOST_ACCOUNTS = 40
_WORKERS = 2
_WORKER_OF_USER = """
SELECT nodename || ':' || nodeport FROM citus_shards
WHERE table_name = 'users'::regclass
  AND shardid = get_shard_id_for_distribution_column('users', $1::uuid)
"""
_INSERT_LEGACY_TOKEN = """
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
VALUES ($1, $2, $3, $4, $5, $6)
"""


@dataclass(frozen=True, slots=True)
class Statement:
    query: str
    args: tuple[object, ...]
    # Sent inside BEGIN ... COMMIT (Citus plans a function call differently there).
    in_transaction: bool


class StatementLog:
    """Every statement the server's pool sends, as asyncpg's query logger reports it."""

    def __init__(self) -> None:
        self._sent: list[asyncpg.connection.LoggedQuery] = []

    def __call__(self, logged: asyncpg.connection.LoggedQuery) -> None:
        self._sent.append(logged)

    async def init_connection(self, conn: asyncpg.Connection) -> None:
        """The service's own connection setup, then the logger."""
        await _init_connection(conn)
        conn.add_query_logger(self)

    @contextmanager
    def capturing(self) -> Iterator[list[Statement]]:
        """The statements sent inside the block (a statement per row of an executemany)."""
        start = len(self._sent)
        captured: list[Statement] = []
        yield captured
        # One RPC's statements follow one another, so BEGIN and COMMIT bracket its own.
        in_transaction = False
        for logged in self._sent[start:]:
            control = _TRANSACTION_CONTROL.match(logged.query)
            if control:
                keyword = control.group(1).upper()
                if keyword in ("BEGIN", "COMMIT", "ROLLBACK"):
                    in_transaction = keyword == "BEGIN"
                continue
            # execute/fetch log their arguments as a tuple, executemany its rows as given.
            rows = [logged.args] if isinstance(logged.args, tuple) else list(logged.args)
            captured.extend(Statement(logged.query, tuple(row), in_transaction) for row in rows)


@dataclass(frozen=True, slots=True)
class Account:
    email: str
    user_id: uuid.UUID
    worker: str  # "host:port" of the worker holding the account's shard


@dataclass(slots=True)
class World:
    cluster: CitusCluster
    dsn: str
    clock: FrozenClock
    log: StatementLog
    conn: asyncpg.Connection  # for EXPLAIN and arranging; its statements are not logged
    stub: Stub
    # A server with AUTHSVC_SESSION_LIMIT=1 (evict_oldest): Login evicts.
    capped: Stub
    accounts: list[Account] = field(default_factory=list)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster(citus_cluster: CitusCluster | None) -> AsyncIterator[CitusCluster]:
    """The session's cluster with --on-citus (make pytest-citus), else one of its own."""
    if citus_cluster is not None:
        yield citus_cluster
        return
    with tempfile.TemporaryDirectory(prefix="authsvc-citus-router-") as root:
        own = CitusCluster(Path(root))
        try:
            await own.start()
            yield own
        finally:
            await own.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(cluster: CitusCluster) -> AsyncIterator[World]:
    dsn = await cluster.create_database(f"authsvc_router_{uuid.uuid4().hex[:8]}")
    migrating = await asyncpg.create_pool(dsn, min_size=0, max_size=2)
    try:
        await apply_migrations(migrating)
    finally:
        await migrating.close()
    log = StatementLog()
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    async with AsyncExitStack() as stack:
        # The service's connection class and setup (store/pool.py, whose create_pool takes no
        # hook for a query logger), plus the logger.
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=8,
            connection_class=_PooledConnection,
            init=log.init_connection,
        )
        stack.push_async_callback(pool.close)
        conn = await asyncpg.connect(dsn)
        stack.push_async_callback(conn.close)
        await _init_connection(conn)
        stubs = []
        for overrides in ({}, {"session_limit": "1"}):
            server = AuthServer(
                make_config(dsn, **overrides), pool=pool, clock=clock, runs_sweeper=False
            )
            await server.start()
            stack.push_async_callback(server.stop, None)
            async with asyncio.timeout(READY_TIMEOUT):
                await server.wait_ready()
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            stack.push_async_callback(channel.close)
            stubs.append(auth_service_pb2_grpc.AuthServiceStub(channel))
        world = World(cluster, dsn, clock, log, conn, stub=stubs[0], capped=stubs[1])
        await _register_on_both_workers(world)
        yield world


async def _register_on_both_workers(world: World) -> None:
    """Accounts, one per worker at least (each with a session), first of each kept."""
    by_worker: dict[str, Account] = {}
    for n in range(_MOST_ACCOUNTS):
        email = f"router-{n}@example.com"
        registered = await register(world.stub, email)
        user_id = uuid.UUID(registered.user_id)
        worker = await world.conn.fetchval(_WORKER_OF_USER, user_id)
        by_worker.setdefault(worker, Account(email, user_id, worker))
        if len(by_worker) == _WORKERS:
            break
    assert len(by_worker) == _WORKERS, f"{_MOST_ACCOUNTS} accounts, all on {set(by_worker)}"
    world.accounts.extend(by_worker[worker] for worker in sorted(by_worker))


# --- the RPCs: each arranges what it needs, then returns the one call to capture -----------

Act = Callable[[], Awaitable[object]]


def _failing(call: Act, reason: str) -> Act:
    """`call`, which must fail with `reason`."""

    async def act() -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert error_info(caught.value)[1] == reason

    return act


async def login_succeeding(world: World, account: Account) -> Act:
    return lambda: login(world.stub, account.email)


async def login_with_a_wrong_password(world: World, account: Account) -> Act:
    wrong = PASSWORD + "!"
    return _failing(lambda: login(world.stub, account.email, wrong), "INVALID_CREDENTIALS")


async def login_evicting_at_the_session_limit(world: World, account: Account) -> Act:
    await login(world.capped, account.email)
    return lambda: login(world.capped, account.email)


async def refresh_rotating(world: World, account: Account) -> Act:
    signed_in = await login(world.stub, account.email)
    return lambda: refresh(world.stub, signed_in.refresh_token)


async def refresh_within_the_grace_period(world: World, account: Account) -> Act:
    signed_in = await login(world.stub, account.email)
    await refresh(world.stub, signed_in.refresh_token)
    return lambda: refresh(world.stub, signed_in.refresh_token)


async def refresh_reusing_a_rotated_token(world: World, account: Account) -> Act:
    signed_in = await login(world.stub, account.email)
    await refresh(world.stub, signed_in.refresh_token)
    world.clock.advance(timedelta(seconds=11))  # past the default 10 s grace period
    return _failing(lambda: refresh(world.stub, signed_in.refresh_token), "REFRESH_TOKEN_REUSED")


async def refresh_with_a_legacy_token(world: World, account: Account) -> Act:
    """A token as releases before migration 0025 issued them (no prefix), on a live session,
    as 0025's backfill left its row (with its user)."""
    signed_in = await login(world.stub, account.email)
    legacy = secrets.token_urlsafe(32)
    now = world.clock.now()
    await world.conn.execute(
        _INSERT_LEGACY_TOKEN,
        uuid.uuid4(),
        uuid.UUID(signed_in.session_id),
        hash_refresh_token(legacy),
        now,
        now + timedelta(hours=1),
        account.user_id,
    )
    return lambda: refresh(world.stub, legacy)


async def validate_token_of_a_session_the_cache_does_not_know(
    world: World, account: Account
) -> Act:
    signed_in = await login(world.stub, account.email)

    async def validate() -> None:
        response = await world.stub.ValidateToken(
            pb.ValidateTokenRequest(access_token=signed_in.access_token)
        )
        assert response.active

    return validate


async def list_sessions_first_page(world: World, account: Account) -> Act:
    signed_in = await login(world.stub, account.email)
    request = pb.ListSessionsRequest(page_size=1)
    return lambda: world.stub.ListSessions(request, metadata=bearer(signed_in.access_token))


async def list_sessions_next_page(world: World, account: Account) -> Act:
    signed_in = await login(world.stub, account.email)
    metadata = bearer(signed_in.access_token)
    first = await world.stub.ListSessions(pb.ListSessionsRequest(page_size=1), metadata=metadata)
    assert first.next_page_token
    request = pb.ListSessionsRequest(page_size=1, page_token=first.next_page_token)
    return lambda: world.stub.ListSessions(request, metadata=metadata)


async def revoke_session(world: World, account: Account) -> Act:
    caller = await login(world.stub, account.email)
    other = await login(world.stub, account.email)
    request = pb.RevokeSessionRequest(session_id=other.session_id)
    return lambda: world.stub.RevokeSession(request, metadata=bearer(caller.access_token))


async def revoke_a_session_not_found(world: World, account: Account) -> Act:
    caller = await login(world.stub, account.email)
    request = pb.RevokeSessionRequest(session_id=str(uuid.uuid4()))
    return _failing(
        lambda: world.stub.RevokeSession(request, metadata=bearer(caller.access_token)),
        "SESSION_NOT_FOUND",
    )


def _logout(scope: pb.LogoutScope.ValueType) -> Callable[[World, Account], Awaitable[Act]]:
    async def arrange(world: World, account: Account) -> Act:
        await login(world.stub, account.email)  # another session, for the scopes beyond this
        caller = await login(world.stub, account.email)
        request = pb.LogoutRequest(scope=scope)
        return lambda: world.stub.Logout(request, metadata=bearer(caller.access_token))

    return arrange


async def logout_with_a_refresh_token(world: World, account: Account) -> Act:
    signed_in = await login(world.stub, account.email)
    request = pb.LogoutRequest(refresh_token=signed_in.refresh_token)
    return lambda: world.stub.Logout(request)


@dataclass(frozen=True, slots=True)
class Rpc:
    name: str
    arrange: Callable[[World, Account], Awaitable[Act]]
    # The statements (store constants) it sends that span shards on purpose (docstring).
    multi_shard_on_purpose: frozenset[str] = frozenset()


RPCS = [
    Rpc("Login", login_succeeding),
    Rpc("Login-wrong-password", login_with_a_wrong_password),
    Rpc("Login-evicting-at-the-session-limit", login_evicting_at_the_session_limit),
    Rpc("Refresh", refresh_rotating),
    Rpc("Refresh-within-the-grace-period", refresh_within_the_grace_period),
    Rpc("Refresh-reusing-a-rotated-token", refresh_reusing_a_rotated_token),
    Rpc(
        "Refresh-legacy-token",
        refresh_with_a_legacy_token,
        multi_shard_on_purpose=frozenset({session_sql._TOKEN_OWNER}),
    ),
    Rpc("ValidateToken-database-fallback", validate_token_of_a_session_the_cache_does_not_know),
    Rpc("ListSessions", list_sessions_first_page),
    Rpc("ListSessions-next-page", list_sessions_next_page),
    Rpc("RevokeSession", revoke_session),
    Rpc("RevokeSession-not-found", revoke_a_session_not_found),
    Rpc("Logout-this-session", _logout(pb.LOGOUT_SCOPE_THIS_SESSION)),
    Rpc("Logout-other-sessions", _logout(pb.LOGOUT_SCOPE_OTHER_SESSIONS)),
    Rpc("Logout-all-sessions", _logout(pb.LOGOUT_SCOPE_ALL_SESSIONS)),
    Rpc("Logout-with-a-refresh-token", logout_with_a_refresh_token),
]


async def test_the_accounts_are_spread_over_both_workers(world: World) -> None:
    workers = {f"127.0.0.1:{worker.port}" for worker in world.cluster.workers}

    assert {account.worker for account in world.accounts} == workers


@pytest.mark.parametrize("worker", range(_WORKERS), ids=lambda n: f"worker-{n + 1}")
@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
async def test_every_statement_the_rpc_sends_is_single_shard(
    world: World, rpc: Rpc, worker: int
) -> None:
    account = world.accounts[worker]
    act = await rpc.arrange(world, account)
    with world.log.capturing() as sent:
        await act()
        # The logger's callbacks are scheduled with call_soon: one turn runs any left.
        await asyncio.sleep(0)

    explained = [(statement, await _explain(world, statement)) for statement in sent]

    spanning = {s.query for s, e in explained if e.multi_shard_scans}
    reaching_workers = [e for _, e in explained if e.workers]
    assert spanning == rpc.multi_shard_on_purpose, _report(explained)
    # Not vacuous: the RPC's statements were captured, and reached the account's data.
    assert reaching_workers, _report(explained)
    assert account.worker in set().union(*(e.workers for e in reaching_workers))


async def _explain(world: World, statement: Statement) -> Explained:
    return await explain(
        world.conn, statement.query, *statement.args, in_transaction=statement.in_transaction
    )


def _report(explained: list[tuple[Statement, Explained]]) -> str:
    """Each statement sent, then where Citus runs it."""
    return "\n\n".join(f"{' '.join(s.query.split())}\n  -> {e}" for s, e in explained)
