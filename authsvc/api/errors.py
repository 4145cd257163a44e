"""Core errors to google.rpc.Status: the one place status codes and reasons are chosen."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc.api.convert import end_reason_name
from authsvc.core import errors
from authsvc.v1.error_reason_pb2 import ErrorReason

__all__ = [
    "DOMAIN",
    "answer_for",
    "deadline_exceeded_status",
    "internal_status",
    "reason_of",
    "rfc3339",
    "status_for",
]

DOMAIN = "authsvc"

_Code = grpc.StatusCode
_Answer = tuple[grpc.StatusCode, ErrorReason.ValueType]

# What each error class answers with. A class not listed answers as its nearest listed
# base; an AuthError with none (a bug) as INTERNAL.
_ANSWERS: Mapping[type[errors.AuthError], _Answer] = {
    errors.InvalidArgument: (_Code.INVALID_ARGUMENT, ErrorReason.INVALID_FIELD),
    errors.WeakPassword: (_Code.INVALID_ARGUMENT, ErrorReason.WEAK_PASSWORD),
    errors.InvalidPageToken: (_Code.INVALID_ARGUMENT, ErrorReason.INVALID_PAGE_TOKEN),
    errors.EmailTaken: (_Code.ALREADY_EXISTS, ErrorReason.EMAIL_TAKEN),
    errors.RegistrationDisabled: (_Code.PERMISSION_DENIED, ErrorReason.REGISTRATION_DISABLED),
    errors.SessionNotFound: (_Code.NOT_FOUND, ErrorReason.SESSION_NOT_FOUND),
    errors.InvalidCredentials: (_Code.UNAUTHENTICATED, ErrorReason.INVALID_CREDENTIALS),
    errors.MissingCredentials: (_Code.UNAUTHENTICATED, ErrorReason.MISSING_CREDENTIALS),
    errors.ServiceCredentialsRequired: (
        _Code.UNAUTHENTICATED,
        ErrorReason.SERVICE_CREDENTIALS_REQUIRED,
    ),
    errors.OperatorCredentialsRequired: (
        _Code.UNAUTHENTICATED,
        ErrorReason.OPERATOR_CREDENTIALS_REQUIRED,
    ),
    errors.OperatorNotAllowed: (_Code.PERMISSION_DENIED, ErrorReason.OPERATOR_NOT_ALLOWED),
    errors.UserNotFound: (_Code.NOT_FOUND, ErrorReason.USER_NOT_FOUND),
    errors.UserDisabled: (_Code.PERMISSION_DENIED, ErrorReason.USER_DISABLED),
    errors.PasswordResetTokenInvalid: (
        _Code.UNAUTHENTICATED,
        ErrorReason.PASSWORD_RESET_TOKEN_INVALID,
    ),
    errors.SessionLimitReached: (_Code.RESOURCE_EXHAUSTED, ErrorReason.SESSION_LIMIT_REACHED),
    errors.WebhookDeliveryNotFound: (_Code.NOT_FOUND, ErrorReason.WEBHOOK_DELIVERY_NOT_FOUND),
    errors.TokenInvalid: (_Code.UNAUTHENTICATED, ErrorReason.TOKEN_INVALID),
    errors.TokenExpired: (_Code.UNAUTHENTICATED, ErrorReason.TOKEN_EXPIRED),
    errors.RefreshTokenInvalid: (_Code.UNAUTHENTICATED, ErrorReason.REFRESH_TOKEN_INVALID),
    errors.RefreshTokenExpired: (_Code.UNAUTHENTICATED, ErrorReason.REFRESH_TOKEN_EXPIRED),
    errors.RefreshTokenReused: (_Code.UNAUTHENTICATED, ErrorReason.REFRESH_TOKEN_REUSED),
    errors.SessionRevoked: (_Code.UNAUTHENTICATED, ErrorReason.SESSION_REVOKED),
    errors.SessionExpired: (_Code.UNAUTHENTICATED, ErrorReason.SESSION_EXPIRED),
    errors.RateLimited: (_Code.RESOURCE_EXHAUSTED, ErrorReason.RATE_LIMITED),
    errors.ServerBusy: (_Code.RESOURCE_EXHAUSTED, ErrorReason.SERVER_BUSY),
    errors.DatabaseUnavailable: (_Code.UNAVAILABLE, ErrorReason.DATABASE_UNAVAILABLE),
    errors.NotReady: (_Code.UNAVAILABLE, ErrorReason.NOT_READY),
    errors.CursorExpired: (_Code.OUT_OF_RANGE, ErrorReason.CURSOR_EXPIRED),
    errors.SubscriberTooSlow: (_Code.RESOURCE_EXHAUSTED, ErrorReason.SUBSCRIBER_TOO_SLOW),
    errors.StepUpRequired: (_Code.PERMISSION_DENIED, ErrorReason.STEP_UP_REQUIRED),
    errors.SecondFactorInvalid: (_Code.UNAUTHENTICATED, ErrorReason.SECOND_FACTOR_INVALID),
    errors.PendingLoginInvalid: (_Code.UNAUTHENTICATED, ErrorReason.PENDING_LOGIN_INVALID),
    errors.FactorNotFound: (_Code.NOT_FOUND, ErrorReason.FACTOR_NOT_FOUND),
    errors.PasskeyChallengeInvalid: (
        _Code.UNAUTHENTICATED,
        ErrorReason.PASSKEY_CHALLENGE_INVALID,
    ),
    errors.PasskeysDisabled: (_Code.FAILED_PRECONDITION, ErrorReason.PASSKEYS_DISABLED),
    errors.FactorAlreadyEnrolled: (_Code.ALREADY_EXISTS, ErrorReason.FACTOR_ALREADY_ENROLLED),
}
_INTERNAL: _Answer = (_Code.INTERNAL, ErrorReason.INTERNAL)


def answer_for(error_type: type[errors.AuthError]) -> _Answer:
    """The status code and ErrorInfo reason an error of this class answers with."""
    for cls in error_type.__mro__:
        if issubclass(cls, errors.AuthError) and cls in _ANSWERS:
            return _ANSWERS[cls]
    return _INTERNAL


def reason_of(error: errors.AuthError) -> str:
    """The ErrorInfo reason `error` answers with, as sent: its ErrorReason's name."""
    return ErrorReason.Name(answer_for(type(error))[1])


def rfc3339(instant: datetime) -> str:
    """An aware datetime in RFC 3339, UTC, as ErrorInfo metadata carries instants."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _metadata(error: errors.AuthError) -> dict[str, str]:
    """The error's ErrorInfo metadata: its own, and for a session that ended, why and when
    (error_reason.proto's SESSION_REVOKED, SESSION_EXPIRED, REFRESH_TOKEN_REUSED)."""
    if not isinstance(error, errors.SessionEnded) or error.end_reason is None:
        return error.metadata
    metadata = {**error.metadata, "end_reason": end_reason_name(error.end_reason)}
    if error.ended_at is not None:
        metadata["ended_at"] = rfc3339(error.ended_at)
    return metadata


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(error: errors.AuthError) -> grpc.Status:
    """The rich status for `error`: its code, one ErrorInfo, and a BadRequest for fields."""
    code, reason = answer_for(type(error))
    info = error_details_pb2.ErrorInfo(
        reason=ErrorReason.Name(reason), domain=DOMAIN, metadata=_metadata(error)
    )
    details = [_packed(info)]
    if isinstance(error, errors.InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    if isinstance(error, errors.RateLimited):
        delay = duration_pb2.Duration()
        # Whole seconds, rounded up: retrying a moment early would only be refused again.
        delay.FromSeconds(math.ceil(error.retry_after.total_seconds()))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return cast(grpc.Status, rpc_status.to_status(status))


def _plain_status(answer: _Answer, message: str) -> grpc.Status:
    code, reason = answer
    info = error_details_pb2.ErrorInfo(reason=ErrorReason.Name(reason), domain=DOMAIN)
    status = status_pb2.Status(code=code.value[0], message=message, details=[_packed(info)])
    return cast(grpc.Status, rpc_status.to_status(status))


def deadline_exceeded_status() -> grpc.Status:
    """For a call whose deadline passed while the service worked on it."""
    answer = (grpc.StatusCode.DEADLINE_EXCEEDED, ErrorReason.DEADLINE_EXCEEDED)
    return _plain_status(answer, "deadline exceeded")


def internal_status() -> grpc.Status:
    """For bugs: no detail leaves the process (the log has the traceback)."""
    return _plain_status(_INTERNAL, "internal error")
