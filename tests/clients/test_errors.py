"""Failures arrive as AuthsvcError subclasses chosen by ErrorInfo.reason, never as grpc errors."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace

import grpc
import pytest
from authsvc_client import (
    AlreadyExists,
    AuthClient,
    AuthsvcError,
    CursorExpired,
    DatabaseUnavailable,
    EmailTaken,
    FactorAlreadyEnrolled,
    FactorNotFound,
    FactorType,
    InvalidArgument,
    InvalidCredentials,
    InvalidPageToken,
    MissingCredentials,
    NotFound,
    NotReady,
    OperatorCredentialsRequired,
    OperatorNotAllowed,
    PasskeyChallengeInvalid,
    PasskeysDisabled,
    PasswordResetTokenInvalid,
    PendingLoginInvalid,
    PermissionDenied,
    RateLimited,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    RefreshTokenReused,
    RegistrationDisabled,
    SecondFactorInvalid,
    ServiceCredentialsRequired,
    SessionEndReason,
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionRevoked,
    StepUpRequired,
    SubscriberTooSlow,
    TokenExpired,
    TokenInvalid,
    Unavailable,
    UserDisabled,
    UserNotFound,
    WeakPassword,
    WebhookDeliveryNotFound,
    error_from_rpc,
)
from authsvc_client.v1.auth_service_pb2 import SessionEndReason as SessionEndReasonProto
from authsvc_client.v1.error_reason_pb2 import ErrorReason
from google.rpc import error_details_pb2, status_pb2

from tests.conftest import Launch
from tests.helpers import PASSWORD, served_reasons, unused_port

EMAIL = "ada@example.com"

# The class each reason raises, as the classes' docstrings promise: a reason of its own
# names its own class; INVALID_FIELD the family's; a bug or a deadline only the base.
RAISES: dict[str, type[AuthsvcError]] = {
    "INVALID_FIELD": InvalidArgument,
    "WEAK_PASSWORD": WeakPassword,
    "INVALID_PAGE_TOKEN": InvalidPageToken,
    "EMAIL_TAKEN": EmailTaken,
    "REGISTRATION_DISABLED": RegistrationDisabled,
    "INVALID_CREDENTIALS": InvalidCredentials,
    "MISSING_CREDENTIALS": MissingCredentials,
    "TOKEN_INVALID": TokenInvalid,
    "TOKEN_EXPIRED": TokenExpired,
    "REFRESH_TOKEN_INVALID": RefreshTokenInvalid,
    "REFRESH_TOKEN_EXPIRED": RefreshTokenExpired,
    "REFRESH_TOKEN_REUSED": RefreshTokenReused,
    "SESSION_REVOKED": SessionRevoked,
    "SESSION_EXPIRED": SessionExpired,
    "SESSION_NOT_FOUND": SessionNotFound,
    "RATE_LIMITED": RateLimited,
    "SERVER_BUSY": RateLimited,
    "DATABASE_UNAVAILABLE": DatabaseUnavailable,
    "NOT_READY": NotReady,
    "DEADLINE_EXCEEDED": AuthsvcError,
    "INTERNAL": AuthsvcError,
    "SERVICE_CREDENTIALS_REQUIRED": ServiceCredentialsRequired,
    "CURSOR_EXPIRED": CursorExpired,
    "SUBSCRIBER_TOO_SLOW": SubscriberTooSlow,
    "OPERATOR_CREDENTIALS_REQUIRED": OperatorCredentialsRequired,
    "OPERATOR_NOT_ALLOWED": OperatorNotAllowed,
    "USER_NOT_FOUND": UserNotFound,
    "USER_DISABLED": UserDisabled,
    "PASSWORD_RESET_TOKEN_INVALID": PasswordResetTokenInvalid,
    "SESSION_LIMIT_REACHED": SessionLimitReached,
    "WEBHOOK_DELIVERY_NOT_FOUND": WebhookDeliveryNotFound,
    "STEP_UP_REQUIRED": StepUpRequired,
    "SECOND_FACTOR_INVALID": SecondFactorInvalid,
    "PENDING_LOGIN_INVALID": PendingLoginInvalid,
    "FACTOR_NOT_FOUND": FactorNotFound,
    "PASSKEY_CHALLENGE_INVALID": PasskeyChallengeInvalid,
    "PASSKEYS_DISABLED": PasskeysDisabled,
    "FACTOR_ALREADY_ENROLLED": FactorAlreadyEnrolled,
}
REASONS = [value.name for value in ErrorReason.DESCRIPTOR.values if value.number != 0]


def _failed_call(
    code: grpc.StatusCode, reason: str, metadata: dict[str, str] | None = None
) -> grpc.aio.AioRpcError:
    """A call that failed as the server fails one: the code, and an ErrorInfo in the trailers."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain="authsvc", metadata=metadata)
    status = status_pb2.Status(code=code.value[0], message="refused")
    status.details.add().Pack(info)
    trailers = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details="refused")


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_the_server_sends_raises_its_class(reason: str) -> None:
    code = served_reasons()[reason]

    error = error_from_rpc(_failed_call(code, reason))

    assert (type(error), error.code, error.reason) == (RAISES[reason], code, reason)


def test_the_client_knows_every_session_end_reason_of_the_proto() -> None:
    names = {
        value.name.removeprefix("SESSION_END_REASON_")
        for value in SessionEndReasonProto.DESCRIPTOR.values
    }

    assert {reason.name for reason in SessionEndReason} == names


def test_step_up_required_names_the_factor_types_of_its_metadata() -> None:
    metadata = {"factor_types": "FACTOR_TYPE_TOTP,FACTOR_TYPE_PASSKEY,FACTOR_TYPE_NEWER"}

    error = error_from_rpc(
        _failed_call(grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED", metadata)
    )

    assert isinstance(error, StepUpRequired)
    # A kind newer than this client still counts: the user has a factor to step up with.
    assert error.factor_types == (FactorType.TOTP, FactorType.PASSKEY, FactorType.UNSPECIFIED)


def test_step_up_required_without_factor_types_names_none() -> None:
    error = error_from_rpc(
        _failed_call(grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED", {"factor_types": ""})
    )

    assert isinstance(error, StepUpRequired)
    assert error.factor_types == ()


@pytest.mark.asyncio
async def test_register_with_a_taken_email_and_another_password_raises_invalid_credentials(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(InvalidCredentials):
        await client.register(EMAIL, "another password 42")


@pytest.mark.asyncio
async def test_register_with_a_taken_email_and_its_owners_password_signs_in(
    client: AuthClient,
) -> None:
    first = await client.register(EMAIL, PASSWORD)

    again = await client.register(EMAIL, PASSWORD)

    assert again.user_id == first.user_id
    assert again.session_id != first.session_id


@pytest.mark.asyncio
async def test_register_revealing_accounts_with_a_taken_email_raises_already_exists(
    launch: Launch,
) -> None:
    launched = await launch(registration_reveals_accounts="true")
    async with AuthClient.connect(f"127.0.0.1:{launched.server.port}") as client:
        await client.register(EMAIL, PASSWORD)

        with pytest.raises(EmailTaken) as caught:
            await client.register(EMAIL, PASSWORD)

    assert isinstance(caught.value, AlreadyExists)

    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "EMAIL_TAKEN",
    )


@pytest.mark.asyncio
async def test_register_with_a_weak_password_raises_invalid_argument_naming_the_field(
    client: AuthClient,
) -> None:
    with pytest.raises(WeakPassword) as caught:
        await client.register(EMAIL, "short")

    assert isinstance(caught.value, InvalidArgument)

    assert (caught.value.reason, caught.value.field) == ("WEAK_PASSWORD", "password")


@pytest.mark.asyncio
async def test_register_while_disabled_raises_permission_denied(launch: Launch) -> None:
    launched = await launch(registration_enabled="false")

    async with AuthClient.connect(f"127.0.0.1:{launched.server.port}") as client:
        with pytest.raises(RegistrationDisabled) as caught:
            await client.register(EMAIL, PASSWORD)

    assert isinstance(caught.value, PermissionDenied)
    assert caught.value.reason == "REGISTRATION_DISABLED"


@pytest.mark.asyncio
async def test_login_with_a_wrong_password_raises_invalid_credentials(client: AuthClient) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(InvalidCredentials) as caught:
        await client.login(EMAIL, "not the password")

    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )


@pytest.mark.asyncio
async def test_list_sessions_before_signing_in_raises_missing_credentials(
    client: AuthClient,
) -> None:
    with pytest.raises(MissingCredentials) as caught:
        await client.list_sessions()

    assert caught.value.reason == "MISSING_CREDENTIALS"


@pytest.mark.asyncio
async def test_revoking_a_session_that_is_not_the_callers_raises_not_found(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(SessionNotFound) as caught:
        await client.revoke_session(uuid.uuid4())

    assert isinstance(caught.value, NotFound)
    assert caught.value.reason == "SESSION_NOT_FOUND"


@pytest.mark.asyncio
async def test_a_foreign_page_token_raises_invalid_argument_invalid_page_token(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(InvalidPageToken) as caught:
        await client.list_sessions(page_token="bm90LW91cnM")

    assert (caught.value.reason, caught.value.field) == ("INVALID_PAGE_TOKEN", "page_token")


@pytest.mark.asyncio
async def test_rate_limited_login_exposes_the_retry_delay(launch: Launch) -> None:
    launched = await launch(login_failures_per_account="2")

    async with AuthClient.connect(f"127.0.0.1:{launched.server.port}") as client:
        for _ in range(2):
            with pytest.raises(InvalidCredentials):
                await client.login(EMAIL, "not the password")
        with pytest.raises(RateLimited) as caught:
            await client.login(EMAIL, PASSWORD)

    assert (caught.value.reason, caught.value.retry_delay) == (
        "RATE_LIMITED",
        launched.server.config.login_failure_window,
    )


@pytest.mark.asyncio
async def test_an_unknown_refresh_token_raises_refresh_token_invalid_a_session_end(
    client: AuthClient,
) -> None:
    pair = await client.register(EMAIL, PASSWORD)
    await client.tokens.set_tokens(replace(pair, refresh_token=secrets.token_urlsafe(32)))

    with pytest.raises(RefreshTokenInvalid) as caught:
        await client.refresh()

    assert isinstance(caught.value, SessionExpired)
    assert caught.value.reason == "REFRESH_TOKEN_INVALID"


@pytest.mark.asyncio
async def test_unreachable_service_raises_unavailable() -> None:
    async with AuthClient.connect(f"127.0.0.1:{unused_port()}") as client:
        with pytest.raises(Unavailable) as caught:
            await client.get_jwks()

    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "")


@pytest.mark.asyncio
async def test_errors_keep_the_grpc_error_as_their_cause(client: AuthClient) -> None:
    with pytest.raises(AuthsvcError) as caught:
        await client.login(EMAIL, PASSWORD)

    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
