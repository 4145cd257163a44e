"""`authsvc admin revoke-sessions` against a real server: every flag reaches its filter
field, --dry-run ends nothing, and the run answers with what it ended."""

from __future__ import annotations

import json
import uuid

import jwt
import pytest

from authsvc.store.pool import Pool
from tests.conftest import AdminLaunched
from tests.helpers import login, register
from tests.integration.test_admin_cli import _admin

pytestmark = pytest.mark.asyncio


async def test_every_filter_flag_selects_and_a_dry_run_ends_nothing(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    alice = await register(admin_server.stub)
    await login(admin_server.stub)
    await register(admin_server.stub, "bob@example.com")
    device_type = await pool.fetchval(
        "SELECT device_type FROM sessions WHERE id = $1", uuid.UUID(alice.session_id)
    )
    kid = jwt.get_unverified_header(alice.access_token)["kid"]

    run = await _admin(
        admin_server,
        "revoke-sessions",
        "--user-id",
        alice.user_id,
        "--created-after",
        "2000-01-01T00:00:00Z",
        "--created-before",
        "2100-01-01T00:00:00Z",
        "--ip-cidr",
        "127.0.0.0/8",
        "--user-agent-contains",
        "GRPC",
        "--device-type",
        device_type,
        "--signing-key-id",
        kid,
        "--reason",
        "drill",
        "--dry-run",
    )

    assert run.code == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["session_count"] == "2"
    assert {session["user_id"] for session in answer["sample"]} == {alice.user_id}
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 3


async def test_match_all_ends_every_session_and_prints_the_count(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    await register(admin_server.stub)
    await register(admin_server.stub, "bob@example.com")

    run = await _admin(
        admin_server, "revoke-sessions", "--match-all", "--reason", "every session, drill"
    )

    assert (run.code, json.loads(run.stdout)) == (0, {"session_count": "2", "sample": []})
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL") == 0


async def test_no_filter_flag_exits_1_invalid_field(admin_server: AdminLaunched) -> None:
    await register(admin_server.stub)

    run = await _admin(admin_server, "revoke-sessions", "--reason", "oops")

    assert run.code == 1
    assert run.stderr.startswith("authsvc admin: INVALID_FIELD")
