"""One table of access-token claim cases, answered alike by the server and the Python verifier.

The table (clients/testdata/access_token_claims.json) is shared with the Node client's tests,
so the server, TokenVerifier and the Node TokenVerifier refuse the same tokens for the same
reason, with the same clock-skew allowance.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from authsvc_client import (
    DEFAULT_LEEWAY,
    AuthClient,
    AuthsvcError,
    Principal,
    TokenPair,
    TokenVerifier,
)

from authsvc import config as config_module
from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.clients.conftest import REPO_ROOT, minted_claims
from tests.helpers import PASSWORD, Stub, bearer, error_info

TABLE = json.loads(
    (REPO_ROOT / "clients" / "testdata" / "access_token_claims.json").read_text(encoding="utf-8")
)
ACCEPTED = "accepted"
CASES = [pytest.param(case, id=case["name"]) for case in TABLE["cases"]]


@pytest_asyncio.fixture
async def pair(server: AuthServer, clock: FrozenClock) -> AsyncIterator[TokenPair]:
    """The tokens of a live session, whose sub and sid the table's tokens carry."""
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as user:
        tokens = await user.register("ada@example.com", PASSWORD)
        yield tokens


def _token(server: AuthServer, pair: TokenPair, case: dict[str, Any]) -> str:
    """The case's claims over a minted token's, signed with the server's active key."""
    kid, algorithm, private_key = server.keys.signing_key()
    claims = minted_claims(server, pair)
    now = claims["iat"]
    claims |= {name: now + offset for name, offset in case.get("times", {}).items()}
    claims |= case.get("claims", {})
    for name in case.get("remove", []):
        del claims[name]
    return jwt.encode(
        claims, private_key, algorithm=algorithm, headers={"kid": kid, "typ": "at+jwt"}
    )


def test_clock_skew_defaults_equal_the_tables() -> None:
    setting = next(s for s in config_module.SETTINGS if s.name == "clock_skew")
    assert setting.default is not None
    table_skew = timedelta(seconds=TABLE["clock_skew_seconds"])

    assert (setting.parse(setting.default), DEFAULT_LEEWAY) == (table_skew, table_skew)


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES)
async def test_validate_token_answers_the_claims_table(
    stub: Stub, server: AuthServer, pair: TokenPair, case: dict[str, Any]
) -> None:
    token = _token(server, pair, case)

    response = await stub.ValidateToken(pb.ValidateTokenRequest(access_token=token))

    verdict = ACCEPTED if response.active else response.inactive_reason
    assert verdict == case["verdict"]
    if "assurance" in case:
        level = factors_pb.AssuranceLevel.Name(response.assurance_level)
        reported = [level.removeprefix("ASSURANCE_LEVEL_"), list(response.amr)]
        assert reported == case["assurance"]


async def _bearer_verdict(stub: Stub, token: str) -> str:
    """ListSessions stands for every bearer-authenticated RPC: all verify the token alike."""
    try:
        await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(token))
    except grpc.aio.AioRpcError as error:
        code, reason, _ = error_info(error)
        return reason if code == grpc.StatusCode.UNAUTHENTICATED else f"{code.name} {reason}"
    return ACCEPTED


async def _verifier_verdict(
    verifier: TokenVerifier, token: str
) -> tuple[str, str | None, Principal | None]:
    """The verdict and, for a refusal, the error's message, else the principal."""
    try:
        principal = await verifier.verify(token)
    except AuthsvcError as error:
        return error.reason, error.message, None
    return ACCEPTED, None, principal


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES)
async def test_bearer_authenticated_rpc_answers_the_claims_table(
    stub: Stub, server: AuthServer, pair: TokenPair, case: dict[str, Any]
) -> None:
    token = _token(server, pair, case)

    verdict = await _bearer_verdict(stub, token)

    assert verdict == case["verdict"]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", CASES)
async def test_token_verifier_answers_the_claims_table_saying_why_it_refuses(
    client: AuthClient,
    server: AuthServer,
    clock: FrozenClock,
    pair: TokenPair,
    case: dict[str, Any],
) -> None:
    token = _token(server, pair, case)

    verdict, message, principal = await _verifier_verdict(
        TokenVerifier(client, now=clock.now), token
    )

    assert (verdict, message) == (case["verdict"], case.get("message"))
    if "assurance" in case:
        assert principal is not None
        reported = [principal.assurance_level.name, list(principal.amr)]
        assert reported == case["assurance"]
