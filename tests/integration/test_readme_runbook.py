"""The README's grpcurl runbook, run as written with the real grpcurl binary.

The block is taken from README.md itself, so the runbook cannot rot: a
command that stops working, or output that stops matching, fails here.
"""

from __future__ import annotations

import pytest

from authsvc.service_keys import mint_service_key
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import bearer, register
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

README = (ROOT / "README.md").read_text()


def _fenced_after(marker: str) -> str:
    return fenced_after(README, marker)


async def test_readme_runbook_runs_top_to_bottom(launch: Launch, pool: Pool) -> None:
    launched = await launch()
    script = pointed_at(_fenced_after("runbook"), launched.server.port)

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    expected_in_order = [
        "authsvc.v1.AuthService",  # list
        '"status": "SERVING"',  # health
        '"current": true',  # ListSessions
        '"active": true',  # ValidateToken
        '"kty": "OKP"',  # GetJwks, pretty-printed by jq
        '"revokedSessionCount": 1',  # Logout
    ]
    positions = [stdout.find(text) for text in expected_in_order]
    assert -1 not in positions, stdout
    assert positions == sorted(positions), stdout
    reasons = {
        row["revoke_reason"] for row in await pool.fetch("SELECT revoke_reason FROM sessions")
    }
    assert reasons == {"revoked_by_user: lost phone", "logout"}


async def test_readme_error_example_is_what_grpcurl_prints(launch: Launch) -> None:
    launched = await launch()
    # The runbook's first lines: ADDR, G, and the two read-only calls.
    preamble = _fenced_after("runbook").split("\n# Register", 1)[0]
    setup = pointed_at(preamble, launched.server.port)
    command, _, expected = _fenced_after("runbook-error").partition("\n")
    account = (
        '$G -d \'{"email":"ada@example.com","password":"correct horse battery"}\''
        " $ADDR authsvc.v1.AuthService/Register > /dev/null"
    )

    status, _, stderr = await bash(
        f"{setup}\n{account}\n{command.removeprefix('$ ')}\necho exit=$? >&2"
    )

    assert status == 0
    assert stderr.strip() == f"{expected.strip()}\nexit={_grpcurl_failure_status()}"


def _grpcurl_failure_status() -> int:
    # grpcurl exits 64 + the gRPC code on an RPC error: UNAUTHENTICATED is 16.
    return 64 + 16


async def test_readme_feed_runbook_streams_a_revocation_and_serves_the_key_set(
    launch: Launch,
) -> None:
    key, entry = mint_service_key("readme")
    launched = await launch(service_keys=entry, http_port="0")
    assert launched.server.http_port is not None
    tokens = await register(launched.stub, "feed@example.com")
    await launched.stub.Logout(pb.LogoutRequest(), metadata=bearer(tokens.access_token))
    script = pointed_at(_fenced_after("runbook-feed"), launched.server.port)
    script = set_once(script, "URL", f"http://127.0.0.1:{launched.server.http_port}")
    script = set_once(script, "KEY", key)

    status, stdout, stderr = await bash("set -uo pipefail\n" + script)

    assert status == 0, stderr
    expected_in_order = [
        f'"sessionId": "{tokens.session_id}"',  # the logout, replayed
        '"reason": "SESSION_END_REASON_USER_LOGOUT"',
        '"heartbeat"',
        '"keys"',  # the JWKS
        '"jwks_uri": "http://127.0.0.1:',  # the discovery document
    ]
    positions = [stdout.find(text) for text in expected_in_order]
    assert -1 not in positions, stdout
    assert positions == sorted(positions), stdout
    assert "Code: DeadlineExceeded" in stderr  # -max-time ended the stream, nothing else
