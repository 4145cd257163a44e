"""Refresh lineage (AUTHSVC_REFRESH_LINEAGE): every presentation of a refresh token that
rotated it, served its successor again or ended the session as reuse, read back with
AdminService.GetSessionLineage, over a real socket against a real PostgreSQL.

The servers trust x-forwarded-for from 127.0.0.1, so each client names its address; each
has a channel of its own, so each has its own user agent.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
import pytest_asyncio

from authsvc.core.clock import FrozenClock
from authsvc.domain.lineage import MAX_LINEAGE_STEPS
from authsvc.store.pool import Pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import AdminLaunched, LaunchAdmin
from tests.helpers import Stub, error_info, register
from tests.processes import authsvc_env, run_authsvc
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

PROXY = "127.0.0.1/32"
# The default refresh_grace_period is 10s.
WITHIN_GRACE = timedelta(seconds=5)
PAST_GRACE = timedelta(seconds=11)
HONEST = ("198.51.100.7", "HonestApp/2.1")
THIEF = ("203.0.113.66", "curl/8.5.0")

Client = Callable[[tuple[str, str]], Any]


@pytest_asyncio.fixture
async def client(admin_server: AdminLaunched) -> AsyncIterator[Client]:
    """Factory: Refresh from (address, user agent), on a channel with that user agent."""
    async with AsyncExitStack() as channels:
        stubs: dict[str, Stub] = {}

        async def refresh_from(who: tuple[str, str], token: str) -> pb.RefreshResponse:
            address, agent = who
            if agent not in stubs:
                channel = await channels.enter_async_context(
                    grpc.aio.insecure_channel(
                        f"127.0.0.1:{admin_server.server.port}",
                        options=[("grpc.primary_user_agent", agent)],
                    )
                )
                stubs[agent] = auth_service_pb2_grpc.AuthServiceStub(channel)
            response: pb.RefreshResponse = await stubs[agent].Refresh(
                pb.RefreshRequest(refresh_token=token),
                metadata=(("x-forwarded-for", address),),
            )
            return response

        yield lambda who: lambda token: refresh_from(who, token)


@pytest_asyncio.fixture
async def admin_server(launch_admin: LaunchAdmin) -> AdminLaunched:
    return await launch_admin(trusted_proxies=PROXY)


async def token_id(pool: Pool, token: str) -> str:
    found = await pool.fetchval(
        "SELECT id FROM refresh_tokens WHERE token_hash = $1",
        hashlib.sha256(token.encode("ascii")).digest(),
    )
    assert found is not None
    return str(found)


async def lineage(
    admin_server: AdminLaunched, session_id: str
) -> admin_pb.GetSessionLineageResponse:
    answer: admin_pb.GetSessionLineageResponse = await admin_server.admin.GetSessionLineage(
        admin_pb.GetSessionLineageRequest(session_id=session_id),
        metadata=admin_server.as_operator,
    )
    return answer


def step_of(
    step: admin_pb.LineageStep,
) -> tuple[str, str, datetime, str, str, str, bool]:
    return (
        step.token_id,
        step.successor_token_id,
        step.presented_at.ToDatetime(),
        step.ip_address,
        step.user_agent,
        admin_pb.RefreshOutcome.Name(step.outcome),
        step.within_grace,
    )


def naive(instant: datetime) -> datetime:
    return instant.replace(tzinfo=None)


async def lineage_rows(pool: Pool, session_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM refresh_lineage WHERE session_id = $1", uuid.UUID(session_id)
    )
    return count


async def test_three_rotations_are_three_steps_in_order_with_ids_addresses_and_agents(
    admin_server: AdminLaunched, client: Client, clock: FrozenClock, pool: Pool
) -> None:
    laptop, phone, tablet = (
        ("198.51.100.1", "Laptop/1"),
        ("198.51.100.2", "Phone/2"),
        ("198.51.100.3", "Tablet/3"),
    )
    signed_in = await register(admin_server.stub)
    tokens, times = [signed_in.refresh_token], []
    for who in (laptop, phone, tablet):
        clock.advance(timedelta(minutes=1))
        times.append(naive(clock.now()))
        tokens.append((await client(who)(tokens[-1])).refresh_token)
    ids = [await token_id(pool, token) for token in tokens]

    answer = await lineage(admin_server, signed_in.session_id)

    assert [step_of(step) for step in answer.steps] == [
        (ids[0], ids[1], times[0], *laptop, "REFRESH_OUTCOME_ROTATED", False),
        (ids[1], ids[2], times[1], *phone, "REFRESH_OUTCOME_ROTATED", False),
        (ids[2], ids[3], times[2], *tablet, "REFRESH_OUTCOME_ROTATED", False),
    ]
    assert answer.initial_token_id == ids[0]
    assert (answer.session.session_id, answer.session.user_id) == (
        signed_in.session_id,
        signed_in.user_id,
    )
    assert (answer.HasField("reuse"), answer.truncated) == (False, False)


async def test_a_replay_inside_the_grace_window_is_a_grace_replay_step(
    admin_server: AdminLaunched, client: Client, clock: FrozenClock, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub)
    rotated = await client(HONEST)(signed_in.refresh_token)
    clock.advance(WITHIN_GRACE)
    second_tab = ("198.51.100.7", "HonestApp/2.1 second tab")
    await client(second_tab)(signed_in.refresh_token)
    first, successor = (
        await token_id(pool, signed_in.refresh_token),
        await token_id(pool, rotated.refresh_token),
    )

    answer = await lineage(admin_server, signed_in.session_id)

    assert [step_of(step)[3:] for step in answer.steps] == [
        (*HONEST, "REFRESH_OUTCOME_ROTATED", False),
        (*second_tab, "REFRESH_OUTCOME_GRACE_REPLAY", True),
    ]
    # The replay was served the successor the first presentation got.
    assert [(s.token_id, s.successor_token_id) for s in answer.steps] == [
        (first, successor),
        (first, successor),
    ]
    assert not answer.HasField("reuse")


async def test_reuse_names_the_honest_and_the_replayed_presentation(
    admin_server: AdminLaunched, client: Client, clock: FrozenClock, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub)
    rotated = await client(HONEST)(signed_in.refresh_token)
    stolen = await token_id(pool, signed_in.refresh_token)
    successor = await token_id(pool, rotated.refresh_token)
    clock.advance(PAST_GRACE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client(THIEF)(signed_in.refresh_token)
    assert error_info(caught.value)[1] == "REFRESH_TOKEN_REUSED"

    answer = await lineage(admin_server, signed_in.session_id)

    reuse = answer.reuse
    assert reuse.token_id == stolen
    assert step_of(reuse.first_presentation)[:2] + step_of(reuse.first_presentation)[3:] == (
        stolen,
        successor,
        *HONEST,
        "REFRESH_OUTCOME_ROTATED",
        False,
    )
    assert step_of(reuse.replayed_presentation)[:2] + step_of(reuse.replayed_presentation)[3:] == (
        stolen,
        "",
        *THIEF,
        "REFRESH_OUTCOME_REUSE_DETECTED",
        False,
    )
    assert [admin_pb.RefreshOutcome.Name(s.outcome) for s in answer.steps] == [
        "REFRESH_OUTCOME_ROTATED",
        "REFRESH_OUTCOME_REUSE_DETECTED",
    ]
    assert answer.session.end_reason == pb.SESSION_END_REASON_REFRESH_TOKEN_REUSE
    assert answer.session.ended_at.ToDatetime() == naive(clock.now())
    # The session as GetSession shows it: the system ended it, on detecting the reuse.
    assert answer.session.ended_by.kind == pb.SESSION_ENDER_KIND_SYSTEM


async def test_a_replay_brought_by_logout_is_a_reuse_step_too(
    admin_server: AdminLaunched, client: Client, clock: FrozenClock
) -> None:
    signed_in = await register(admin_server.stub)
    await client(HONEST)(signed_in.refresh_token)
    clock.advance(PAST_GRACE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin_server.stub.Logout(pb.LogoutRequest(refresh_token=signed_in.refresh_token))
    assert error_info(caught.value)[1] == "REFRESH_TOKEN_REUSED"

    answer = await lineage(admin_server, signed_in.session_id)

    assert step_of(answer.reuse.first_presentation)[3:5] == HONEST
    assert answer.reuse.replayed_presentation.outcome == admin_pb.REFRESH_OUTCOME_REUSE_DETECTED
    assert answer.reuse.token_id == answer.initial_token_id


async def test_a_long_lineage_answers_its_newest_steps_and_still_the_reuse_pair(
    admin_server: AdminLaunched, client: Client, clock: FrozenClock, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub)
    await client(HONEST)(signed_in.refresh_token)
    # A month of refreshes since, written straight to the table: a thousand RPCs would
    # only make the test slow.
    await pool.execute(
        """
        INSERT INTO refresh_lineage (session_id, presented_token_id, successor_token_id,
            presented_at, ip_address, user_agent, outcome, within_grace, user_id)
        SELECT $1, gen_random_uuid(), gen_random_uuid(), $2, '198.51.100.7', 'HonestApp/2.1',
            'rotated', false, s.user_id
        FROM generate_series(1, $3) CROSS JOIN sessions s WHERE s.id = $1
        """,
        uuid.UUID(signed_in.session_id),
        clock.now(),
        MAX_LINEAGE_STEPS,
    )
    clock.advance(PAST_GRACE)
    with pytest.raises(grpc.aio.AioRpcError):
        await client(THIEF)(signed_in.refresh_token)

    answer = await lineage(admin_server, signed_in.session_id)

    assert (len(answer.steps), answer.truncated) == (MAX_LINEAGE_STEPS, True)
    assert answer.steps[-1].outcome == admin_pb.REFRESH_OUTCOME_REUSE_DETECTED
    # The honest first presentation is older than every step shown, and still named.
    assert step_of(answer.reuse.first_presentation)[3:5] == HONEST
    assert answer.initial_token_id == answer.reuse.token_id


async def test_a_failed_presentation_that_ends_nothing_is_not_recorded(
    admin_server: AdminLaunched, client: Client, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub)
    await admin_server.stub.Logout(
        pb.LogoutRequest(), metadata=(("authorization", f"Bearer {signed_in.access_token}"),)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client(THIEF)(signed_in.refresh_token)
    assert error_info(caught.value)[1] == "SESSION_REVOKED"

    answer = await lineage(admin_server, signed_in.session_id)

    assert list(answer.steps) == []
    assert await lineage_rows(pool, signed_in.session_id) == 0


async def test_with_lineage_off_refresh_records_nothing(
    launch_admin: LaunchAdmin, clock: FrozenClock, pool: Pool
) -> None:
    server = await launch_admin(refresh_lineage="false")
    signed_in = await register(server.stub)
    rotated = await server.stub.Refresh(pb.RefreshRequest(refresh_token=signed_in.refresh_token))
    clock.advance(WITHIN_GRACE)
    await server.stub.Refresh(pb.RefreshRequest(refresh_token=signed_in.refresh_token))
    clock.advance(PAST_GRACE)
    with pytest.raises(grpc.aio.AioRpcError):
        await server.stub.Refresh(pb.RefreshRequest(refresh_token=signed_in.refresh_token))

    answer = await lineage(server, signed_in.session_id)

    assert rotated.refresh_token
    assert (list(answer.steps), answer.HasField("reuse")) == ([], False)
    assert await lineage_rows(pool, signed_in.session_id) == 0


async def test_reuse_after_an_unrecorded_rotation_still_names_the_replay(
    launch_admin: LaunchAdmin, clock: FrozenClock
) -> None:
    # The setting turned on between the rotation and its replay (one replica each).
    off = await launch_admin(refresh_lineage="false")
    on = await launch_admin()
    signed_in = await register(off.stub)
    await off.stub.Refresh(pb.RefreshRequest(refresh_token=signed_in.refresh_token))
    clock.advance(PAST_GRACE)
    with pytest.raises(grpc.aio.AioRpcError):
        await on.stub.Refresh(pb.RefreshRequest(refresh_token=signed_in.refresh_token))

    answer = await lineage(on, signed_in.session_id)

    assert answer.reuse.replayed_presentation.outcome == admin_pb.REFRESH_OUTCOME_REUSE_DETECTED
    assert not answer.reuse.HasField("first_presentation")
    assert answer.reuse.token_id == answer.initial_token_id


async def test_lineage_goes_with_its_session_when_the_sweeper_deletes_it(
    launch_admin: LaunchAdmin, clock: FrozenClock, pool: Pool
) -> None:
    server = await launch_admin(ended_session_retention="1h")
    signed_in = await register(server.stub)
    rotated = await server.stub.Refresh(pb.RefreshRequest(refresh_token=signed_in.refresh_token))
    await server.stub.Logout(
        pb.LogoutRequest(), metadata=(("authorization", f"Bearer {rotated.access_token}"),)
    )
    assert await lineage_rows(pool, signed_in.session_id) == 1
    clock.advance(timedelta(hours=1, seconds=1))

    await server.server.sweeper.run_once()

    assert await lineage_rows(pool, signed_in.session_id) == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lineage(server, signed_in.session_id)
    assert error_info(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")


async def test_delete_user_leaves_no_address_or_agent_in_the_lineage(
    admin_server: AdminLaunched, client: Client, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub)
    await client(HONEST)(signed_in.refresh_token)
    assert await lineage_rows(pool, signed_in.session_id) == 1

    await admin_server.admin.DeleteUser(
        admin_pb.DeleteUserRequest(user_id=signed_in.user_id, reason="erasure request"),
        metadata=admin_server.as_operator,
    )

    kept = await pool.fetchval(
        "SELECT count(*) FROM refresh_lineage"
        " WHERE session_id = $1 AND (ip_address <> '' OR user_agent <> '')",
        uuid.UUID(signed_in.session_id),
    )
    assert kept == 0


async def test_an_unknown_session_is_session_not_found_and_still_audited(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lineage(admin_server, unknown)

    assert error_info(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    row = await pool.fetchrow(
        "SELECT session_id, detail FROM audit_events WHERE event = 'admin_session_lineage_viewed'"
    )
    assert row is not None
    assert (str(row["session_id"]), row["detail"]["found"]) == (unknown, False)


async def test_reading_a_lineage_is_audited_against_the_user(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub)

    await lineage(admin_server, signed_in.session_id)

    row = await pool.fetchrow(
        "SELECT user_id, session_id, detail FROM audit_events"
        " WHERE event = 'admin_session_lineage_viewed'"
    )
    assert row is not None
    assert (str(row["user_id"]), str(row["session_id"])) == (
        signed_in.user_id,
        signed_in.session_id,
    )
    assert (row["detail"]["operator"], row["detail"]["found"]) == ("oncall", True)


async def test_the_lineage_grpcurl_example_names_the_honest_and_the_thief(
    admin_server: AdminLaunched, client: Client, clock: FrozenClock
) -> None:
    signed_in = await register(admin_server.stub)
    await client(HONEST)(signed_in.refresh_token)
    clock.advance(PAST_GRACE)
    with pytest.raises(grpc.aio.AioRpcError):
        await client(THIEF)(signed_in.refresh_token)
    operations = (ROOT / "docs" / "operations.md").read_text()
    script = pointed_at(fenced_after(operations, "lineage-grpcurl"), admin_server.server.port)
    script = set_once(script, "KEY", admin_server.as_operator[0][1].removeprefix("Bearer "))

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    reuse, end = json.JSONDecoder().raw_decode(stdout)
    first, replayed = reuse["firstPresentation"], reuse["replayedPresentation"]
    assert (first["ipAddress"], first["userAgent"]) == HONEST
    assert (replayed["ipAddress"], replayed["userAgent"]) == THIEF
    assert [line.split("\t")[1:] for line in stdout[end:].strip().splitlines()] == [
        ["REFRESH_OUTCOME_ROTATED", "false", *HONEST],
        ["REFRESH_OUTCOME_REUSE_DETECTED", "false", *THIEF],
    ], stdout


async def test_admin_session_lineage_prints_the_steps_as_json(
    admin_server: AdminLaunched, client: Client
) -> None:
    signed_in = await register(admin_server.stub)
    await client(HONEST)(signed_in.refresh_token)
    operator_key = admin_server.as_operator[0][1].removeprefix("Bearer ")

    run = await run_authsvc(
        "admin",
        "session-lineage",
        signed_in.session_id,
        "--address",
        f"127.0.0.1:{admin_server.server.port}",
        env=authsvc_env(None, AUTHSVC_OPERATOR_KEY=operator_key),
    )

    assert run.code == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["session"]["session_id"] == signed_in.session_id
    assert [(s["outcome"], s["ip_address"], s["user_agent"]) for s in answer["steps"]] == [
        ("REFRESH_OUTCOME_ROTATED", *HONEST)
    ]
