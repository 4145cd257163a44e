"""Failures arrive as AuthsvcError subclasses chosen by ErrorInfo.reason, never as grpc errors."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio
from authsvc_client import (
    AlreadyExists,
    AuthClient,
    AuthsvcError,
    InvalidArgument,
    InvalidCredentials,
    MissingCredentials,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tests.conftest import Launch
from tests.helpers import PASSWORD

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


@pytest_asyncio.fixture
async def rate_limiting_server() -> AsyncIterator[int]:
    """A stand-in AuthService whose Login always answers RATE_LIMITED with a RetryInfo.

    authsvc itself does not throttle yet, so this is the only way to see the wire shape the
    proto documents (RESOURCE_EXHAUSTED, reason RATE_LIMITED, google.rpc.RetryInfo).
    """

    async def login(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        status = status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED,
            message="too many attempts",
            details=[
                _packed(error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="authsvc")),
                _packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=30))),
            ],
        )
        await context.abort_with_status(rpc_status.to_status(status))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "authsvc.v1.AuthService", {"Login": grpc.unary_unary_rpc_method_handler(login)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(None)


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_register_with_a_taken_email_raises_already_exists(client: AuthClient) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(AlreadyExists) as caught:
        await client.register(EMAIL, PASSWORD)

    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "EMAIL_TAKEN",
    )


async def test_register_with_a_weak_password_raises_invalid_argument_naming_the_field(
    client: AuthClient,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.register(EMAIL, "short")

    assert (caught.value.reason, caught.value.field) == ("WEAK_PASSWORD", "password")


async def test_register_while_disabled_raises_permission_denied(launch: Launch) -> None:
    launched = await launch(registration_enabled="false")

    async with AuthClient.connect(f"127.0.0.1:{launched.server.port}") as client:
        with pytest.raises(PermissionDenied) as caught:
            await client.register(EMAIL, PASSWORD)

    assert caught.value.reason == "REGISTRATION_DISABLED"


async def test_login_with_a_wrong_password_raises_invalid_credentials(client: AuthClient) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(InvalidCredentials) as caught:
        await client.login(EMAIL, "not the password")

    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )


async def test_list_sessions_before_signing_in_raises_missing_credentials(
    client: AuthClient,
) -> None:
    with pytest.raises(MissingCredentials) as caught:
        await client.list_sessions()

    assert caught.value.reason == "MISSING_CREDENTIALS"


async def test_revoking_a_session_that_is_not_the_callers_raises_not_found(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(NotFound) as caught:
        await client.revoke_session(uuid.uuid4())

    assert caught.value.reason == "SESSION_NOT_FOUND"


async def test_a_foreign_page_token_raises_invalid_argument_invalid_page_token(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(InvalidArgument) as caught:
        await client.list_sessions(page_token="bm90LW91cnM")

    assert (caught.value.reason, caught.value.field) == ("INVALID_PAGE_TOKEN", "page_token")


async def test_rate_limited_call_exposes_the_retry_delay(rate_limiting_server: int) -> None:
    async with AuthClient.connect(f"127.0.0.1:{rate_limiting_server}") as client:
        with pytest.raises(RateLimited) as caught:
            await client.login(EMAIL, PASSWORD)

    assert (caught.value.reason, caught.value.retry_delay) == (
        "RATE_LIMITED",
        timedelta(seconds=30),
    )


async def test_unreachable_service_raises_unavailable() -> None:
    async with AuthClient.connect(f"127.0.0.1:{_unused_port()}") as client:
        with pytest.raises(Unavailable) as caught:
            await client.get_jwks()

    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "")


async def test_errors_keep_the_grpc_error_as_their_cause(client: AuthClient) -> None:
    with pytest.raises(AuthsvcError) as caught:
        await client.login(EMAIL, PASSWORD)

    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
