"""The liveness cache: ValidateToken and the access-token RPCs decide from the process's
cache while its revocation feed is current, and from the database when it is not.

To see which of the two answered, a server's feed listens to another (migrated, quiet)
database: it is current, but hears of no revocation of the server's own database. A
revocation written there directly, as another replica's would be, is then visible only
to a database read.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import READY_TIMEOUT, Launch, Launched, NewDatabase, dsn_for_database
from tests.helpers import (
    CLOCK_SKEW,
    Stub,
    Tokens,
    bearer,
    error_info,
    register,
    sign_in,
    validate,
)

pytestmark = pytest.mark.asyncio

# The feed stays current on its own polls; staleness is tested with a feed that never connects.
QUIET: dict[str, Any] = {"revocation_feed_staleness": "1h"}


async def revoke_elsewhere(pool: Pool, session: Tokens) -> None:
    """End the session as another replica would, in the server's database."""
    await pool.execute(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'elsewhere',"
        " end_reason = 'user_revoked' WHERE id = $1",
        uuid.UUID(session.session_id),
    )


async def current(server: AuthServer) -> AuthServer:
    assert server.revocation_feed is not None
    async with asyncio.timeout(READY_TIMEOUT):
        await server.revocation_feed.wait_current()
    return server


@pytest_asyncio.fixture
async def deaf(launch: Launch, new_database: NewDatabase) -> Launched:
    """A server whose current feed listens to a database where nothing happens."""
    launched = await launch(listen_database_url=await new_database(migrated=True), **QUIET)
    await current(launched.server)
    return launched


async def validation(stub: Stub, session: Tokens) -> tuple[bool, str]:
    response = await validate(stub, session.access_token)
    return response.active, response.inactive_reason


async def test_a_known_session_is_answered_without_reading_the_database(
    deaf: Launched, pool: Pool
) -> None:
    session = await register(deaf.stub)
    await validate(deaf.stub, session.access_token)  # the first check of a session reads it
    await revoke_elsewhere(pool, session)

    answer = await validation(deaf.stub, session)

    # Active: the revocation is in the database only, so the answer did not read it.
    assert answer == (True, "")


async def test_a_process_whose_feed_is_not_current_checks_the_database(
    launch: Launch, pg_dsn: str, pool: Pool
) -> None:
    # Its feed never connects: the cache must never answer, however much it knows.
    nowhere = dsn_for_database(pg_dsn, f"absent_{uuid.uuid4().hex[:8]}")
    stub = (await launch(listen_database_url=nowhere)).stub
    session = await register(stub)
    await validate(stub, session.access_token)
    await revoke_elsewhere(pool, session)

    answer = await validation(stub, session)

    assert answer == (False, "SESSION_REVOKED")


async def test_a_feed_that_goes_stale_sends_checks_back_to_the_database(
    deaf: Launched, pool: Pool
) -> None:
    session = await register(deaf.stub)
    await validate(deaf.stub, session.access_token)
    await revoke_elsewhere(pool, session)
    assert deaf.server.revocation_feed is not None

    await deaf.server.revocation_feed.aclose()

    assert await validation(deaf.stub, session) == (False, "SESSION_REVOKED")


RPCS_THAT_AUTHENTICATE: dict[str, Any] = {
    "list_sessions": lambda stub, token: stub.ListSessions(
        pb.ListSessionsRequest(), metadata=bearer(token)
    ),
    "revoke_session": lambda stub, token: stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=str(uuid.uuid4())), metadata=bearer(token)
    ),
    "logout": lambda stub, token: stub.Logout(pb.LogoutRequest(), metadata=bearer(token)),
}


@pytest.mark.parametrize("call", RPCS_THAT_AUTHENTICATE.values(), ids=RPCS_THAT_AUTHENTICATE)
async def test_access_token_rpcs_authenticate_a_known_session_without_reading_the_database(
    deaf: Launched, pool: Pool, call: Any
) -> None:
    session = await register(deaf.stub)
    await validate(deaf.stub, session.access_token)
    await revoke_elsewhere(pool, session)

    try:
        await call(deaf.stub, session.access_token)
        refused = None
    except grpc.aio.AioRpcError as error:
        refused = error_info(error)[:2]

    # Past authentication: the revocation, in the database only, was not read to authenticate.
    assert refused in (None, (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"))


# --- read your writes ---------------------------------------------------------


async def test_a_replica_refuses_a_session_it_revoked_before_its_feed_hears_of_it(
    deaf: Launched,
) -> None:
    caller, other = await sign_in(deaf.stub, 2)
    await validate(deaf.stub, other.access_token)

    await deaf.stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=other.session_id), metadata=bearer(caller.access_token)
    )

    assert await validation(deaf.stub, other) == (False, "SESSION_REVOKED")


@pytest.mark.parametrize(
    "scope",
    [pb.LOGOUT_SCOPE_THIS_SESSION, pb.LOGOUT_SCOPE_OTHER_SESSIONS, pb.LOGOUT_SCOPE_ALL_SESSIONS],
    ids=["this-session", "other-sessions", "all-sessions"],
)
async def test_a_replica_refuses_the_sessions_it_logged_out_before_its_feed_hears_of_them(
    deaf: Launched, scope: pb.LogoutScope.ValueType
) -> None:
    sessions = await sign_in(deaf.stub, 3)
    for session in sessions:
        await validate(deaf.stub, session.access_token)

    await deaf.stub.Logout(pb.LogoutRequest(scope=scope), metadata=bearer(sessions[0].access_token))

    ended = {
        pb.LOGOUT_SCOPE_THIS_SESSION: sessions[:1],
        pb.LOGOUT_SCOPE_OTHER_SESSIONS: sessions[1:],
        pb.LOGOUT_SCOPE_ALL_SESSIONS: sessions,
    }[scope]
    assert [await validation(deaf.stub, s) for s in ended] == [(False, "SESSION_REVOKED")] * len(
        ended
    )


# --- capped expiry --------------------------------------------------------------

IDLE_SETTINGS: dict[str, Any] = {"session_idle_timeout": "1h", "access_token_ttl": "2h"}
IDLE_TIMEOUT = timedelta(hours=1)


async def test_an_access_token_expires_the_clock_skew_before_its_sessions_deadline(
    launch: Launch, clock: FrozenClock
) -> None:
    stub = (await launch(**IDLE_SETTINGS)).stub

    session = await register(stub)

    expires_at = session.access_token_expires_at.ToDatetime(tzinfo=clock.now().tzinfo)
    assert expires_at == clock.now() + IDLE_TIMEOUT - CLOCK_SKEW


async def test_a_cached_session_is_refused_at_its_idle_deadline_despite_the_leeway(
    launch: Launch, new_database: NewDatabase, clock: FrozenClock
) -> None:
    launched = await launch(
        listen_database_url=await new_database(migrated=True), **IDLE_SETTINGS, **QUIET
    )
    await current(launched.server)
    session = await register(launched.stub)
    await validate(launched.stub, session.access_token)
    clock.advance(IDLE_TIMEOUT)

    answer = await validation(launched.stub, session)

    assert answer == (False, "SESSION_EXPIRED")
