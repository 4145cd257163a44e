"""The exceptions every call raises, and the one function that maps gRPC failures onto them.

Callers branch on the class or on `reason` (the server's stable `ErrorInfo.reason`), never on
the message text, which is for people.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "DOMAIN",
    "SESSION_OVER_REASONS",
    "AlreadyExists",
    "AuthsvcError",
    "InvalidArgument",
    "InvalidCredentials",
    "MissingCredentials",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "SessionExpired",
    "TokenExpired",
    "TokenInvalid",
    "Unauthenticated",
    "Unavailable",
    "error_from_rpc",
]

_log = logging.getLogger(__name__)

DOMAIN = "authsvc"

# Reasons that mean the session is over: signing in again is the only way on.
SESSION_OVER_REASONS = frozenset(
    {
        "SESSION_REVOKED",
        "SESSION_EXPIRED",
        "REFRESH_TOKEN_INVALID",
        "REFRESH_TOKEN_EXPIRED",
        "REFRESH_TOKEN_REUSED",
    }
)


class AuthsvcError(Exception):
    """Base of every error a call raises.

    `code` is the gRPC status code, `reason` the server's `ErrorInfo.reason` (empty when the
    failure carried none, e.g. a connection that never opened), `metadata` the ErrorInfo's
    metadata. The original `grpc.aio.AioRpcError`, if any, is the `__cause__`.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class InvalidArgument(AuthsvcError):
    """A request field is malformed (INVALID_FIELD, WEAK_PASSWORD, INVALID_PAGE_TOKEN).

    `field` names the field, as the server's `metadata["field"]` does.
    """

    @property
    def field(self) -> str:
        return self.metadata.get("field", "")


class AlreadyExists(AuthsvcError):
    """Register with an email that has an account (EMAIL_TAKEN)."""


class PermissionDenied(AuthsvcError):
    """The service refuses this on purpose, e.g. REGISTRATION_DISABLED."""


class NotFound(AuthsvcError):
    """No such session among the caller's (SESSION_NOT_FOUND)."""


class Unauthenticated(AuthsvcError):
    """Base of UNAUTHENTICATED answers: these credentials do not let you in."""


class InvalidCredentials(Unauthenticated):
    """Wrong password or unknown email; the service does not say which."""


class MissingCredentials(Unauthenticated):
    """The call needed `authorization: Bearer <access token>` and had none."""


class TokenInvalid(Unauthenticated):
    """The access token is malformed, forged or not this service's."""


class TokenExpired(Unauthenticated):
    """The access token is past its `exp`; a refresh gets a new one."""


class SessionExpired(Unauthenticated):
    """The session is over; only signing in again helps.

    One class for every way a session ends, so callers need one `except`; `reason` says
    which: SESSION_REVOKED (logged out or revoked), SESSION_EXPIRED (idle timeout or absolute
    lifetime), REFRESH_TOKEN_REUSED (a spent refresh token was replayed, so the service
    revoked the session as stolen), REFRESH_TOKEN_EXPIRED or REFRESH_TOKEN_INVALID.
    """


class RateLimited(AuthsvcError):
    """Too many attempts (RESOURCE_EXHAUSTED). `retry_delay` is the server's RetryInfo, if sent."""

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_delay: timedelta | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason, metadata=metadata)
        self.retry_delay = retry_delay


class Unavailable(AuthsvcError):
    """The service (or its database) cannot answer now: retry with backoff."""


_BY_REASON: Mapping[str, type[AuthsvcError]] = {
    "INVALID_CREDENTIALS": InvalidCredentials,
    "MISSING_CREDENTIALS": MissingCredentials,
    "TOKEN_INVALID": TokenInvalid,
    "TOKEN_EXPIRED": TokenExpired,
    **dict.fromkeys(SESSION_OVER_REASONS, SessionExpired),
}

_BY_CODE: Mapping[grpc.StatusCode, type[AuthsvcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def _rich_details(error: grpc.aio.AioRpcError) -> list[Any]:
    """The `google.rpc.Status` details of a failed call; empty if it sent none or a bad one."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # The trailer disagrees with the call's own code or message: trust neither detail.
        _log.warning("ignoring an inconsistent grpc-status-details-bin trailer")
        return []
    return [] if status is None else list(status.details)


def _unpacked(details: list[Any], message_type: Any) -> Any | None:
    for detail in details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            return message
    return None


def error_from_rpc(error: grpc.aio.AioRpcError) -> AuthsvcError:
    """The exception for a failed call: chosen by ErrorInfo.reason, else by status code."""
    code = error.code()
    message = error.details() or code.name.lower()
    details = _rich_details(error)
    info = _unpacked(details, error_details_pb2.ErrorInfo)
    reason = str(info.reason) if info is not None else ""
    metadata = dict(info.metadata) if info is not None else {}
    if code is grpc.StatusCode.INVALID_ARGUMENT and "field" not in metadata:
        bad_request = _unpacked(details, error_details_pb2.BadRequest)
        if bad_request is not None and bad_request.field_violations:
            metadata["field"] = str(bad_request.field_violations[0].field)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = _unpacked(details, error_details_pb2.RetryInfo)
        delay = None if retry is None else retry.retry_delay.ToTimedelta()
        return RateLimited(message, code=code, reason=reason, metadata=metadata, retry_delay=delay)
    error_type = (
        _BY_REASON.get(reason) if code is grpc.StatusCode.UNAUTHENTICATED else None
    ) or _BY_CODE.get(code, AuthsvcError)
    return error_type(message, code=code, reason=reason, metadata=metadata)
