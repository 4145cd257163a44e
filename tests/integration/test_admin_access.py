"""Who may call AdminService, on a real server: only a service on AUTHSVC_OPERATORS. No
credential, an unknown key and a user's access token are OPERATOR_CREDENTIALS_REQUIRED; a
known service that is not an operator is OPERATOR_NOT_ALLOWED; every RPC asks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from authsvc.config import ConfigError
from authsvc.service_keys import mint_service_key
from authsvc.v1 import admin_service_pb2 as admin_pb
from tests.conftest import AdminLaunched, ConfigFactory
from tests.helpers import bearer, error_info, register

CREDENTIALS_REQUIRED = (grpc.StatusCode.UNAUTHENTICATED, "OPERATOR_CREDENTIALS_REQUIRED")
NOT_ALLOWED = (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_NOT_ALLOWED")

# Every AdminService RPC, with a request valid enough that only the caller can fail it.
_USER = "00000000-0000-4000-8000-000000000000"
_REQUESTS: dict[str, Any] = {
    "GetUser": admin_pb.GetUserRequest(user_id=_USER),
    "ListUserSessions": admin_pb.ListUserSessionsRequest(user_id=_USER),
    "RevokeUserSessions": admin_pb.RevokeUserSessionsRequest(user_id=_USER, reason="test"),
    "DisableUser": admin_pb.DisableUserRequest(user_id=_USER, reason="test"),
    "EnableUser": admin_pb.EnableUserRequest(user_id=_USER),
    "DeleteUser": admin_pb.DeleteUserRequest(user_id=_USER, reason="test"),
    "ClearLoginThrottle": admin_pb.ClearLoginThrottleRequest(ip_address="192.0.2.1"),
    "ListAuditEvents": admin_pb.ListAuditEventsRequest(),
    "CreatePasswordResetToken": admin_pb.CreatePasswordResetTokenRequest(user_id=_USER),
}


def test_every_admin_rpc_is_covered() -> None:
    service = admin_pb.DESCRIPTOR.services_by_name["AdminService"]

    assert set(_REQUESTS) == {method.name for method in service.methods}


async def _refusal(
    admin_server: AdminLaunched, rpc: str, metadata: tuple[tuple[str, str], ...]
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(admin_server.admin, rpc)(_REQUESTS[rpc], metadata=metadata)
    code, reason, _ = error_info(caught.value)
    return code, reason


# Each way of calling without an operator credential: what `authorization` holds.
_NOT_A_CREDENTIAL: dict[str, Callable[[str, str], tuple[tuple[str, str], ...]]] = {
    "none": lambda stranger, access_token: (),
    "a key of no configured entry": lambda stranger, access_token: bearer(stranger),
    "a user's access token": lambda stranger, access_token: bearer(access_token),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("sent", list(_NOT_A_CREDENTIAL))
@pytest.mark.parametrize("rpc", list(_REQUESTS))
async def test_admin_rpcs_refuse_a_caller_without_a_credential(
    admin_server: AdminLaunched, rpc: str, sent: str
) -> None:
    stranger, _ = mint_service_key("oncall")
    session = await register(admin_server.stub)
    metadata = _NOT_A_CREDENTIAL[sent](stranger, session.access_token)

    refusal = await _refusal(admin_server, rpc, metadata)

    assert refusal == CREDENTIALS_REQUIRED


@pytest.mark.asyncio
@pytest.mark.parametrize("rpc", list(_REQUESTS))
async def test_admin_rpcs_refuse_a_service_that_is_not_an_operator(
    admin_server: AdminLaunched, rpc: str
) -> None:
    refusal = await _refusal(admin_server, rpc, admin_server.as_service)

    assert refusal == NOT_ALLOWED


def test_an_operator_name_no_credential_carries_is_refused_at_start(
    config_factory: ConfigFactory,
) -> None:
    _, entry = mint_service_key("oncall")

    with pytest.raises(ConfigError, match="AUTHSVC_OPERATORS names oncal, which"):
        config_factory(service_keys=entry, operators="oncal")
