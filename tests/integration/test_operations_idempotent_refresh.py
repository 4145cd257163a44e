"""docs/operations.md, "Exactly-once Refresh and retries": its grpcurl example runs as
written, against a server with no refresh grace period, where a repeat without the key
would be reuse."""

from __future__ import annotations

import pytest

from authsvc.domain.refresh_tokens import routed_user
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import PASSWORD, register, validate
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


async def test_the_keyed_refresh_example_answers_the_same_successor_twice(launch: Launch) -> None:
    launched = await launch(refresh_grace_period="0s")
    await register(launched.stub, "ada@example.com")
    script = pointed_at(fenced_after(OPERATIONS, "exactly-once-grpcurl"), launched.server.port)
    script = set_once(script, "PASSWORD", f"'{PASSWORD}'")

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    first, second = stdout.split()
    assert first == second
    assert routed_user(first) is not None  # a refresh token, not "null"
    # The session the example signed in lives on: its successor still rotates.
    refreshed = await launched.stub.Refresh(pb.RefreshRequest(refresh_token=first))
    assert (await validate(launched.stub, refreshed.access_token)).active
