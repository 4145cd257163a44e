"""docs/operations.md's "Why was I signed out?" grpcurl examples, run as written with the
real grpcurl binary against a real server: GetSession as the user and as an operator."""

from __future__ import annotations

import json

import pytest

from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import AdminLaunched
from tests.helpers import PASSWORD, bearer, login, register
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()


async def test_the_why_was_i_signed_out_examples_show_the_reason_and_who(
    admin_server: AdminLaunched,
) -> None:
    signed_out = await register(admin_server.stub, "ada@example.com")
    other = await login(admin_server.stub, "ada@example.com")
    await admin_server.stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password="a new passphrase"),
        metadata=bearer(other.access_token),
    )
    script = pointed_at(fenced_after(OPERATIONS, "why-signed-out"), admin_server.server.port)
    script = set_once(script, "ACCESS_TOKEN", other.access_token)
    script = set_once(script, "SESSION_ID", signed_out.session_id)
    script = set_once(script, "KEY", admin_server.as_operator[0][1].removeprefix("Bearer "))

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    decoder = json.JSONDecoder()
    as_user, end = decoder.raw_decode(stdout.lstrip())
    as_operator = json.loads(stdout.lstrip()[end:])
    ending = {
        "endReason": "SESSION_END_REASON_PASSWORD_CHANGED",
        "endedBy": {"kind": "SESSION_ENDER_KIND_USER", "sessionId": other.session_id},
    }
    assert as_user["session"]["sessionId"] == signed_out.session_id
    assert {key: as_user["session"][key] for key in ending} == ending
    assert {key: as_operator[key] for key in ending} == ending
    assert as_operator["endedAt"] == as_user["session"]["endedAt"]
