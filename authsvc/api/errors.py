"""Core errors to google.rpc.Status: the one place status codes are chosen."""

from __future__ import annotations

import math
from typing import cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc.core import errors

__all__ = ["DOMAIN", "internal_status", "plain_status", "status_for"]

DOMAIN = "authsvc"

# Most specific class first: the first isinstance match wins.
_CODES: tuple[tuple[type[errors.AuthError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.EmailTaken, grpc.StatusCode.ALREADY_EXISTS),
    (errors.RegistrationDisabled, grpc.StatusCode.PERMISSION_DENIED),
    (errors.SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DatabaseUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.NotReady, grpc.StatusCode.UNAVAILABLE),
)


def _code_of(error: errors.AuthError) -> grpc.StatusCode:
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(error: errors.AuthError) -> grpc.Status:
    """The rich status for `error`: its code, one ErrorInfo, and a BadRequest for fields."""
    code = _code_of(error)
    details = [
        _packed(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
        )
    ]
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


def plain_status(code: grpc.StatusCode, message: str) -> grpc.Status:
    """A status the service raises itself, not from an AuthError: its ErrorInfo reason is
    the code's name (INTERNAL, DEADLINE_EXCEEDED), so every answer carries one."""
    info = error_details_pb2.ErrorInfo(reason=code.name, domain=DOMAIN)
    status = status_pb2.Status(code=code.value[0], message=message, details=[_packed(info)])
    return cast(grpc.Status, rpc_status.to_status(status))


def internal_status() -> grpc.Status:
    """For bugs: no detail leaves the process (the log has the traceback)."""
    return plain_status(grpc.StatusCode.INTERNAL, "internal error")
