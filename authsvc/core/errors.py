"""The errors the service can answer with.

Each class carries the stable `reason` that clients branch on; `api/errors.py`
chooses the gRPC status code for each class in one table.
"""

from __future__ import annotations

from datetime import timedelta

from authsvc.core.models import Principal

__all__ = [
    "AuthError",
    "DatabaseUnavailable",
    "EmailTaken",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidPageToken",
    "MissingCredentials",
    "NotReady",
    "RateLimited",
    "RefreshTokenExpired",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "RegistrationDisabled",
    "ServerBusy",
    "SessionExpired",
    "SessionNotFound",
    "SessionRevoked",
    "TokenExpired",
    "TokenInvalid",
    "Unauthenticated",
    "WeakPassword",
]


class AuthError(Exception):
    """Base of every error the service answers with on purpose."""

    reason: str = "UNKNOWN"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata


class InvalidArgument(AuthError):
    """A request field is malformed; `metadata["field"]` names it."""

    reason = "INVALID_FIELD"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class WeakPassword(InvalidArgument):
    reason = "WEAK_PASSWORD"


class InvalidPageToken(InvalidArgument):
    reason = "INVALID_PAGE_TOKEN"

    def __init__(self) -> None:
        super().__init__("page_token", "page_token was not issued for this request")


class EmailTaken(AuthError):
    reason = "EMAIL_TAKEN"


class RegistrationDisabled(AuthError):
    reason = "REGISTRATION_DISABLED"


class SessionNotFound(AuthError):
    reason = "SESSION_NOT_FOUND"


class Unauthenticated(AuthError):
    """Base of the errors that mean: these credentials do not let you in."""


class InvalidCredentials(Unauthenticated):
    reason = "INVALID_CREDENTIALS"


class MissingCredentials(Unauthenticated):
    reason = "MISSING_CREDENTIALS"


class TokenInvalid(Unauthenticated):
    reason = "TOKEN_INVALID"


class TokenExpired(Unauthenticated):
    """Our token, validly signed, past its `exp`; carries who it was for."""

    reason = "TOKEN_EXPIRED"

    def __init__(self, message: str, *, principal: Principal) -> None:
        super().__init__(message)
        self.principal = principal


class RefreshTokenInvalid(Unauthenticated):
    reason = "REFRESH_TOKEN_INVALID"


class RefreshTokenExpired(Unauthenticated):
    reason = "REFRESH_TOKEN_EXPIRED"


class RefreshTokenReused(Unauthenticated):
    reason = "REFRESH_TOKEN_REUSED"


class SessionRevoked(Unauthenticated):
    reason = "SESSION_REVOKED"


class SessionExpired(Unauthenticated):
    reason = "SESSION_EXPIRED"


class RateLimited(AuthError):
    """Too many failed attempts; try again after `retry_after`."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusy(RateLimited):
    """This process has no password-hashing capacity free; retry after `retry_after`.
    Refused at once rather than queued past the caller's deadline."""

    reason = "SERVER_BUSY"


class DatabaseUnavailable(AuthError):
    """The database cannot be reached, used, or did not answer in time; retryable.

    `detail` says what failed (connection refused, authentication failed...) for the
    operator's log and the CLI; clients get only the message.
    """

    reason = "DATABASE_UNAVAILABLE"

    def __init__(self, message: str = "database unavailable", *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class NotReady(AuthError):
    """The service has not finished starting (no database or keys yet)."""

    reason = "NOT_READY"
