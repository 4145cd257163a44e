"""The audit trail: who did what to which session, from where, kept for the retention."""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, bearer, login, refresh, refresh_failure, register
from tests.processes import authsvc_env, run_authsvc

pytestmark = pytest.mark.asyncio

USER_AGENT = "audit-test/1.0"


async def events(pool: Pool, name: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM audit_events WHERE event = $1 ORDER BY id", name)
    return [dict(row) for row in rows]


async def _register_only(stub: Stub) -> None:
    """Register without the helper's Login: one user_registered event and nothing else."""
    await stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))


@pytest_asyncio.fixture
async def agent_stub(server: AuthServer) -> AsyncIterator[Stub]:
    """A stub whose channel announces USER_AGENT."""
    options = (("grpc.primary_user_agent", USER_AGENT),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


async def test_successful_login_is_recorded_with_user_session_address_and_agent(
    agent_stub: Stub, pool: Pool, clock: FrozenClock
) -> None:
    await _register_only(agent_stub)

    signed_in = await login(agent_stub)

    (event,) = await events(pool, "login_succeeded")
    assert str(event["user_id"]) == signed_in.user_id
    assert str(event["session_id"]) == signed_in.session_id
    assert event["ip_address"] == "127.0.0.1"
    assert event["user_agent"] == USER_AGENT
    assert event["occurred_at"] == clock.now()


async def test_failed_login_is_recorded_with_the_user_when_known(stub: Stub, pool: Pool) -> None:
    registered = await register(stub)
    with pytest.raises(grpc.aio.AioRpcError):
        await login(stub, password="not the password")
    with pytest.raises(grpc.aio.AioRpcError):
        await login(stub, email="nobody@example.com")

    failures = await events(pool, "login_failed")

    assert [str(e["user_id"]) if e["user_id"] else None for e in failures] == [
        registered.user_id,
        None,
    ]


async def test_refresh_token_reuse_is_recorded(stub: Stub, pool: Pool, clock: FrozenClock) -> None:
    registered = await register(stub)
    await refresh(stub, registered.refresh_token)
    clock.advance(timedelta(seconds=11))

    await refresh_failure(stub, registered.refresh_token)

    (event,) = await events(pool, "refresh_token_reused")
    assert str(event["session_id"]) == registered.session_id
    assert event["detail"] == {"session_revoked": True}


async def test_revoked_session_is_recorded_with_who_revoked_it_and_why(
    stub: Stub, pool: Pool
) -> None:
    first = await register(stub)
    second = await login(stub)

    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=first.session_id, reason="lost phone"),
        metadata=bearer(second.access_token),
    )

    (event,) = await events(pool, "session_revoked")
    assert str(event["session_id"]) == first.session_id
    assert event["detail"] == {
        "by_session_id": second.session_id,
        "note": "lost phone",
    }


async def test_logout_records_one_event_per_session_it_ends(stub: Stub, pool: Pool) -> None:
    first = await register(stub)
    second = await login(stub)

    await stub.Logout(
        pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_ALL_SESSIONS), metadata=bearer(second.access_token)
    )

    logged_out = await events(pool, "logout")
    assert {str(e["session_id"]) for e in logged_out} == {first.session_id, second.session_id}


async def test_key_rotation_is_recorded(server: AuthServer, pool: Pool) -> None:
    key = await server.keys.rotate()

    (event,) = await events(pool, "key_rotated")
    assert event["detail"]["kid"] == key.kid


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET event = 'nothing happened'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ],
    ids=["update", "delete", "truncate"],
)
async def test_audit_events_cannot_be_changed_or_removed_outside_the_retention_sweep(
    stub: Stub, pool: Pool, statement: str
) -> None:
    await _register_only(stub)

    with pytest.raises(asyncpg.RaiseError):
        await pool.execute(statement)

    assert [row["event"] for row in await pool.fetch("SELECT event FROM audit_events")] == [
        "user_registered"
    ]


async def test_key_rotation_through_the_cli_is_recorded(stub: Stub, pg_dsn: str) -> None:
    await register(stub)
    run = await run_authsvc("keys", "rotate", env=authsvc_env(pg_dsn))
    assert run.code == 0, run.stderr

    audit = await run_authsvc("audit", "--limit", "1", env=authsvc_env(pg_dsn))

    assert audit.code == 0, audit.stderr
    [line] = [json.loads(line) for line in audit.stdout.splitlines()]
    assert line["event"] == "key_rotated"
    assert line["detail"]["kid"] in run.stdout
    assert line["user_agent"] == f"authsvc-cli ({getpass.getuser()}@{socket.gethostname()})"


async def test_audit_trail_holds_no_secret(stub: Stub, pool: Pool) -> None:
    registered = await register(stub)
    refreshed = await refresh(stub, registered.refresh_token)

    dump = str([dict(row) for row in await pool.fetch("SELECT * FROM audit_events")])

    for secret in (PASSWORD, registered.refresh_token, refreshed.refresh_token):
        assert secret not in dump
    assert registered.access_token not in dump


async def test_sweeper_deletes_events_past_the_retention_only(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(audit_retention="1d")
    await _register_only(launched.stub)  # user_registered, now
    clock.advance(timedelta(days=1))
    await login(launched.stub)  # login_succeeded, a day later

    counts = await launched.server.sweeper.run_once()

    assert counts is not None
    assert counts["audit_events"] == 1
    remaining = [row["event"] for row in await pool.fetch("SELECT event FROM audit_events")]
    assert remaining == ["login_succeeded"]


async def test_cli_prints_a_users_events_as_json_lines(stub: Stub, pg_dsn: str) -> None:
    await _register_only(stub)
    registered = await login(stub)
    run = await run_authsvc("audit", "--user", registered.user_id, env=authsvc_env(pg_dsn))

    assert run.code == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["login_succeeded", "user_registered"]
    assert {line["user_id"] for line in lines} == {registered.user_id}
    assert uuid.UUID(lines[0]["session_id"])
