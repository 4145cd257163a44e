"""docs/second-factors.md, "By hand with grpcurl": enrolment, the two-step login and the
claims, run as written with the real grpcurl binary against a real server."""

from __future__ import annotations

import json

import pytest

from authsvc.app import AuthServer
from tests.helpers import PASSWORD, Stub, register
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once

pytestmark = pytest.mark.asyncio

DOC = (ROOT / "docs" / "second-factors.md").read_text()


async def test_the_enrolment_example_signs_in_at_aal2(stub: Stub, server: AuthServer) -> None:
    await register(stub, "ada@example.com")
    script = pointed_at(fenced_after(DOC, "second-factors-grpcurl"), server.port)
    script = set_once(script, "PASSWORD", f"'{PASSWORD}'")

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    assert json.loads(stdout) == {
        "assuranceLevel": "ASSURANCE_LEVEL_AAL2",
        "amr": ["pwd", "otp", "mfa"],
        "acr": "aal2",
    }
