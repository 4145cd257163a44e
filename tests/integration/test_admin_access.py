"""Who may call AdminService, on a real server: only a service on AUTHSVC_OPERATORS. No
credential, an unknown key and a user's access token are OPERATOR_CREDENTIALS_REQUIRED; a
known service that is not an operator is OPERATOR_NOT_ALLOWED; every RPC asks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.config import ConfigError
from authsvc.service_keys import mint_service_key
from authsvc.store.pool import Pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc
from tests.conftest import (
    OPERATOR,
    PLAIN_SERVICE,
    READY_TIMEOUT,
    AdminLaunched,
    ConfigFactory,
)
from tests.helpers import AdminStub, bearer, error_info, register
from tests.pki import BILLING, WEB, Pem, ServicePki, service_pki

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
    "GetSession": admin_pb.AdminServiceGetSessionRequest(session_id=_USER),
    "RevokeSessions": admin_pb.RevokeSessionsRequest(
        filter=admin_pb.SessionFilter(match_all=True), reason="test"
    ),
    "GetSessionLineage": admin_pb.GetSessionLineageRequest(session_id=_USER),
    "ListWebhookDeliveries": admin_pb.ListWebhookDeliveriesRequest(),
    "RetryWebhookDelivery": admin_pb.RetryWebhookDeliveryRequest(delivery_id=_USER),
    "ListUserFactors": admin_pb.ListUserFactorsRequest(user_id=_USER),
    "RemoveUserFactor": admin_pb.RemoveUserFactorRequest(user_id=_USER, factor_id=_USER),
    "SetSecondFactorRequired": admin_pb.SetSecondFactorRequiredRequest(
        user_id=_USER, required=True
    ),
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


@pytest.mark.asyncio
async def test_an_operator_key_is_admitted(admin_server: AdminLaunched) -> None:
    registered = await register(admin_server.stub)

    answer = await admin_server.admin.GetUser(
        admin_pb.GetUserRequest(user_id=registered.user_id), metadata=admin_server.as_operator
    )

    assert answer.user.user_id == registered.user_id


def _access_line(caplog: pytest.LogCaptureFixture, rpc: str) -> logging.LogRecord:
    [record] = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "rpc" and getattr(r, "rpc", None) == rpc
    ]
    return record


@pytest.mark.asyncio
async def test_the_access_log_names_the_operator_and_the_user_never_the_key(
    admin_server: AdminLaunched, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc")
    registered = await register(admin_server.stub)

    await admin_server.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=registered.user_id, reason="test"),
        metadata=admin_server.as_operator,
    )

    record = _access_line(caplog, "/authsvc.v1.AdminService/RevokeUserSessions")
    key = admin_server.as_operator[0][1].removeprefix("Bearer ")
    assert (getattr(record, "service", None), getattr(record, "user_id", None)) == (
        OPERATOR,
        registered.user_id,
    )
    assert key not in caplog.text
    assert all(key not in repr(vars(r)) for r in caplog.records)


@pytest.mark.asyncio
async def test_the_access_log_names_a_refused_service(
    admin_server: AdminLaunched, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.access")

    await _refusal(admin_server, "ListAuditEvents", admin_server.as_service)

    record = _access_line(caplog, "/authsvc.v1.AdminService/ListAuditEvents")
    assert (getattr(record, "service", None), getattr(record, "reason", None)) == (
        PLAIN_SERVICE,
        "OPERATOR_NOT_ALLOWED",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ServicePki:
    return service_pki(tmp_path_factory.mktemp("admin-pki"))


@asynccontextmanager
async def _mtls_admin(
    start_server: Callable[..., Any], config_factory: ConfigFactory, pki: ServicePki, client: Pem
) -> AsyncIterator[AdminStub]:
    """An AdminService stub presenting `client`'s certificate to an mTLS server where WEB
    is an operator and BILLING a plain service."""
    server: AuthServer = await start_server(
        config_factory(
            tls_cert_file=str(pki.server.cert_file),
            tls_key_file=str(pki.server.key_file),
            tls_client_ca_file=str(pki.ca.cert_file),
            service_identities=f"{BILLING},{WEB}",
            operators=WEB,
        )
    )
    async with asyncio.timeout(READY_TIMEOUT):
        await server.wait_ready()
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert, private_key=client.key, certificate_chain=client.cert
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        yield admin_service_pb2_grpc.AdminServiceStub(channel)


@pytest.mark.asyncio
async def test_an_operator_certificate_is_admitted_and_audited_as_such(
    start_server: Callable[..., Any], config_factory: ConfigFactory, pki: ServicePki, pool: Pool
) -> None:
    async with _mtls_admin(start_server, config_factory, pki, pki.web) as admin:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.GetUser(admin_pb.GetUserRequest(email="nobody@example.com"))

    detail = await pool.fetchval(
        "SELECT detail FROM audit_events WHERE event = 'admin_user_viewed'"
    )
    assert error_info(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert (detail["operator"], detail["via"]) == (WEB, "client_certificate")


@pytest.mark.asyncio
async def test_a_service_certificate_not_on_the_operator_list_is_not_allowed(
    start_server: Callable[..., Any], config_factory: ConfigFactory, pki: ServicePki
) -> None:
    async with _mtls_admin(start_server, config_factory, pki, pki.billing) as admin:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ListAuditEvents(admin_pb.ListAuditEventsRequest())

    assert error_info(caught.value)[:2] == NOT_ALLOWED
