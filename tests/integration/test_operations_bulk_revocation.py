"""docs/operations.md's "Revoking sessions by filter" grpcurl block, run as written with the
real grpcurl binary against a real server, as an operator: each incident's dry run
counts what its run then ends, and only those sessions end."""

from __future__ import annotations

import jwt
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from tests.conftest import AdminLaunched
from tests.integration.test_bulk_revocation import (  # noqa: F401 (fixtures)
    KEY_ACTIVATION_DELAY,
    SignIn,
    admin,
    sign_in,
)
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


async def test_the_bulk_revocation_grpcurl_examples_run_top_to_bottom(
    admin: AdminLaunched,  # noqa: F811
    sign_in: SignIn,  # noqa: F811
    pool: Pool,
    clock: FrozenClock,
) -> None:
    leaked = [await sign_in(), await sign_in()]
    await admin.server.keys.rotate()
    clock.advance(KEY_ACTIVATION_DELAY)
    await sign_in(ip="203.0.113.9")
    await sign_in(user_agent="EvilClient/2.1 (like Gecko)")
    innocent = await sign_in(ip="198.51.100.7")
    kid = jwt.get_unverified_header(leaked[0].access_token)["kid"]
    script = pointed_at(fenced_after(OPERATIONS, "bulk-revoke-grpcurl"), admin.server.port)
    script = set_once(script, "KEY", admin.as_operator[0][1].removeprefix("Bearer "))
    script = set_once(script, "KID", kid)

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    counts = [line.strip() for line in stdout.splitlines() if '"sessionCount"' in line]
    assert (
        counts
        == ['"sessionCount": "2",', '"sessionCount": "2"']
        + [
            '"sessionCount": "1",',
            '"sessionCount": "1"',
        ]
        * 2
    ), stdout
    live = await pool.fetch("SELECT id FROM sessions WHERE revoked_at IS NULL")
    assert [str(row["id"]) for row in live] == [innocent.session_id]
