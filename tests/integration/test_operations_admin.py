"""docs/operations.md's AdminService grpcurl examples, run as written with the real grpcurl
binary against a real server, as an operator."""

from __future__ import annotations

import uuid

import pytest

from authsvc.store.pool import Pool
from tests.conftest import AdminLaunched
from tests.helpers import login, register
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


async def test_the_admin_grpcurl_examples_run_top_to_bottom(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    registered = await register(admin_server.stub, "ada@example.com")
    await login(admin_server.stub, "ada@example.com")
    script = pointed_at(fenced_after(OPERATIONS, "admin-grpcurl"), admin_server.server.port)
    script = set_once(script, "KEY", admin_server.as_operator[0][1].removeprefix("Bearer "))

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    expected_in_order = [
        "authsvc.v1.AdminService.GetUser",  # list, by reflection
        f'"sessionId": "{registered.session_id}"',  # ListUserSessions
        '"revokedSessionCount": 2',  # RevokeUserSessions
        "{\n  \n}",  # ClearLoginThrottle's empty answer, as grpcurl prints it
        '"eventType": "admin_sessions_revoked"',  # ListAuditEvents
        '"operator": "oncall"',
        '"disabledReason": "chargeback"',  # DisableUser
    ]
    positions = [stdout.find(text) for text in expected_in_order]
    assert -1 not in positions, stdout
    assert positions == sorted(positions), stdout
    live = await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NULL")
    assert live == 0
    # Reset with the token, then deleted: no account left, the trail keeps the steps.
    assert await pool.fetchval("SELECT count(*) FROM users") == 0
    events = await pool.fetch(
        "SELECT event FROM audit_events WHERE user_id = $1 ORDER BY id",
        uuid.UUID(registered.user_id),
    )
    steps = [row["event"] for row in events]
    assert steps[-5:] == [
        "admin_user_disabled",
        "admin_user_enabled",
        "admin_password_reset_token_created",
        "password_reset",
        "admin_user_deleted",
    ], steps
