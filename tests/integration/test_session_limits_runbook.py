"""docs/operations.md's session-limit grpcurl example, run as written with the real grpcurl
binary against a real server with a limit of 1."""

from __future__ import annotations

import pytest

from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import PASSWORD
from tests.runbook import ROOT, bash, fenced_after, pointed_at

pytestmark = pytest.mark.asyncio

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


async def test_the_session_limit_grpcurl_example_runs_and_shows_the_eviction(
    launch: Launch, pool: Pool
) -> None:
    launched = await launch(session_limit="1")
    await launched.stub.Register(pb.RegisterRequest(email="ada@example.com", password=PASSWORD))
    script = pointed_at(fenced_after(OPERATIONS, "session-limits-grpcurl"), launched.server.port)

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    refused = stdout.find('"reason":"SESSION_REVOKED"')
    listed = stdout.find('"deviceName": "laptop"')
    assert -1 < refused < listed, stdout
    assert "SESSION_END_REASON_SESSION_LIMIT_EVICTED" in stdout[:listed], stdout
    assert stdout.count('"sessionId"') == 1, stdout
    ended = await pool.fetch(
        "SELECT device_name, end_reason FROM sessions WHERE revoked_at IS NOT NULL"
    )
    assert [tuple(row) for row in ended] == [("phone", "session_limit_evicted")]
