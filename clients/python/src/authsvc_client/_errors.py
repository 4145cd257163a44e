"""The exceptions every call raises, and the one function that maps gRPC failures onto them.

Callers branch on the class or on `reason` (the server's stable `ErrorInfo.reason`), never on
the message text, which is for people.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc_client._models import FactorType, PendingLogin, SessionEndReason
from authsvc_client.v1.error_reason_pb2 import ErrorReason

__all__ = [
    "DOMAIN",
    "SESSION_OVER_REASONS",
    "AlreadyExists",
    "AuthsvcError",
    "CursorExpired",
    "DatabaseUnavailable",
    "EmailTaken",
    "FactorAlreadyEnrolled",
    "FactorNotFound",
    "FailedPrecondition",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidPageToken",
    "MissingCredentials",
    "NotFound",
    "NotReady",
    "OperatorCredentialsRequired",
    "OperatorNotAllowed",
    "OutOfRange",
    "PasskeyChallengeInvalid",
    "PasskeysDisabled",
    "PasswordResetTokenInvalid",
    "PendingLoginInvalid",
    "PermissionDenied",
    "RateLimited",
    "RefreshTokenExpired",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "RegistrationDisabled",
    "RevocationFeedStale",
    "SecondFactorInvalid",
    "SecondFactorRequired",
    "ServiceCredentialsRequired",
    "SessionExpired",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionRevoked",
    "StepUpRequired",
    "SubscriberTooSlow",
    "TokenExpired",
    "TokenInvalid",
    "Unauthenticated",
    "Unavailable",
    "UserDisabled",
    "UserNotFound",
    "WeakPassword",
    "WebhookDeliveryNotFound",
    "error_for",
    "error_from_rpc",
]

_log = logging.getLogger(__name__)

DOMAIN = "authsvc"


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


class WeakPassword(InvalidArgument):
    """The new password is too short or too common (WEAK_PASSWORD)."""


class InvalidPageToken(InvalidArgument):
    """A page token this caller was not given (INVALID_PAGE_TOKEN)."""


class AlreadyExists(AuthsvcError):
    """Register with an email that has an account (EMAIL_TAKEN)."""


class EmailTaken(AlreadyExists):
    """Register with an email that has an account (EMAIL_TAKEN)."""


class FactorAlreadyEnrolled(AlreadyExists):
    """The user has a TOTP factor already (remove it first), or the passkey is registered
    already (FACTOR_ALREADY_ENROLLED)."""


class PermissionDenied(AuthsvcError):
    """The service refuses this on purpose, e.g. REGISTRATION_DISABLED."""


class RegistrationDisabled(PermissionDenied):
    """Register is switched off on this service (REGISTRATION_DISABLED)."""


class OperatorNotAllowed(PermissionDenied):
    """An AdminService call from a service that is not on the operator allow-list
    (OPERATOR_NOT_ALLOWED)."""


class UserDisabled(PermissionDenied):
    """The account is disabled by an operator (USER_DISABLED)."""


class StepUpRequired(PermissionDenied):
    """The call is sensitive and this session has not verified the user's second factor
    recently enough (STEP_UP_REQUIRED): `step_up` with one of `factor_types`, then make the
    call again. Empty `factor_types` means the user has no factor and the session began
    before the step-up window: sign in again.

    The client never retries or refreshes this away, and the session stays signed in: only
    the user can answer it.
    """

    @property
    def factor_types(self) -> tuple[FactorType, ...]:
        """The factors the user can step up with, from ErrorInfo metadata `factor_types`."""
        names = self.metadata.get("factor_types", "")
        return tuple(FactorType.from_name(name) for name in names.split(",") if name.strip())


class NotFound(AuthsvcError):
    """No such session among the caller's (SESSION_NOT_FOUND)."""


class SessionNotFound(NotFound):
    """No such session among the caller's (SESSION_NOT_FOUND)."""


class UserNotFound(NotFound):
    """AdminService: no such user, or no longer (USER_NOT_FOUND)."""


class WebhookDeliveryNotFound(NotFound):
    """AdminService: no such webhook delivery, or no longer (WEBHOOK_DELIVERY_NOT_FOUND)."""


class FactorNotFound(NotFound):
    """No such factor (or unconfirmed enrolment) among the caller's (FACTOR_NOT_FOUND)."""


class FailedPrecondition(AuthsvcError):
    """FAILED_PRECONDITION, any reason: the service is not set up for this call."""


class PasskeysDisabled(FailedPrecondition):
    """The service has no WebAuthn relying party configured, so passkeys cannot be used
    (PASSKEYS_DISABLED)."""


class Unauthenticated(AuthsvcError):
    """Base of UNAUTHENTICATED answers: these credentials do not let you in."""


class InvalidCredentials(Unauthenticated):
    """Wrong password or unknown email; the service does not say which."""


class MissingCredentials(Unauthenticated):
    """The call needed `authorization: Bearer <access token>` and had none."""


class ServiceCredentialsRequired(Unauthenticated):
    """The RPC is for internal services and the call carried no service key or allowed client
    certificate (SERVICE_CREDENTIALS_REQUIRED); a user's access token is not one."""


class TokenInvalid(Unauthenticated):
    """The access token is malformed, forged or not this service's."""


class TokenExpired(Unauthenticated):
    """The access token is past its `exp`; a refresh gets a new one."""


class OperatorCredentialsRequired(Unauthenticated):
    """An AdminService call without an operator's service key or client certificate
    (OPERATOR_CREDENTIALS_REQUIRED); a user's access token is not one."""


class PasswordResetTokenInvalid(Unauthenticated):
    """The password-reset token is unknown, used or expired (PASSWORD_RESET_TOKEN_INVALID)."""


class SecondFactorInvalid(Unauthenticated):
    """The TOTP code, recovery code or passkey assertion is wrong, already used or outside
    the time window (SECOND_FACTOR_INVALID). Throttled like a wrong password; the session
    (or the pending login, for a few more tries) stays."""


class PendingLoginInvalid(Unauthenticated):
    """The pending login is unknown, used, expired, out of attempts or not good for this call
    (PENDING_LOGIN_INVALID): sign in again with `login`."""


class PasskeyChallengeInvalid(Unauthenticated):
    """The WebAuthn challenge is unknown, used, expired or for another purpose
    (PASSKEY_CHALLENGE_INVALID): begin again."""


class SessionExpired(Unauthenticated):
    """The session is over; only signing in again helps.

    One base for every way a session ends, so callers need one `except`; the subclass (and
    `reason`) says which: SessionRevoked (logged out or revoked), SessionExpired itself for
    SESSION_EXPIRED (idle timeout or absolute lifetime), RefreshTokenReused (a spent
    refresh token was replayed, so the service revoked the session as stolen),
    RefreshTokenExpired, RefreshTokenInvalid.

    `end_reason` says why the session ended (PASSWORD_CHANGED, IDLE_TIMEOUT, ...) and
    `ended_at` when, from the ErrorInfo metadata: set on SESSION_REVOKED, SESSION_EXPIRED
    and REFRESH_TOKEN_REUSED while the service keeps the ended session, else UNSPECIFIED
    and None.
    """

    @property
    def end_reason(self) -> SessionEndReason:
        return SessionEndReason.from_name(self.metadata.get("end_reason", ""))

    @property
    def ended_at(self) -> datetime | None:
        text = self.metadata.get("ended_at")
        if not text:
            return None
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except ValueError:
            return None


class SessionRevoked(SessionExpired):
    """The session was logged out or revoked (SESSION_REVOKED)."""


class RefreshTokenReused(SessionExpired):
    """A spent refresh token came back; the service revoked the session as stolen."""


class RefreshTokenExpired(SessionExpired):
    """The refresh token is past its expiry (REFRESH_TOKEN_EXPIRED)."""


class RefreshTokenInvalid(SessionExpired):
    """The refresh token is unknown to the service (REFRESH_TOKEN_INVALID)."""


class RateLimited(AuthsvcError):
    """Too many attempts, or the server is busy (RESOURCE_EXHAUSTED). `retry_delay` is the
    server's RetryInfo, if sent."""

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


class SubscriberTooSlow(RateLimited):
    """WatchRevocations cut this subscriber off: it fell a whole buffer behind
    (SUBSCRIBER_TOO_SLOW). Resume from the last cursor received."""


class SessionLimitReached(AuthsvcError):
    """The user has as many live sessions as the server's limit allows and its policy refuses
    more (SESSION_LIMIT_REACHED, RESOURCE_EXHAUSTED): sign out on another device first.
    Waiting does not help, so this is not a RateLimited."""


class OutOfRange(AuthsvcError):
    """OUT_OF_RANGE, any reason."""


class CursorExpired(OutOfRange):
    """WatchRevocations' cursor is older than the revocation log keeps (CURSOR_EXPIRED):
    start again from a snapshot, cursor 0."""


class Unavailable(AuthsvcError):
    """The service (or its database) cannot answer now: retry with backoff."""


class DatabaseUnavailable(Unavailable):
    """The service is up but cannot reach its database (DATABASE_UNAVAILABLE)."""


class NotReady(Unavailable):
    """The service is starting (migrations or keys not loaded yet) or stopping (NOT_READY)."""


class RevocationFeedStale(Unavailable):
    """A subscribed TokenVerifier built with `when_stale=WhenStale.REFUSE` refused a token
    because its revocation feed is stale. Raised by the client itself: no reason."""


class SecondFactorRequired(Exception):
    """`login` (or `register`) checked the password, and the account needs a second factor
    before it gets a session: `pending` says which factors, and whether one must be enrolled
    first. Finish with `complete_login(error.pending, proof)`.

    Raised, not returned, so that `login` keeps returning a TokenPair and code that does not
    know second factors stops here instead of using a session it does not have. Not an
    AuthsvcError: the service answered OK, and no tokens were issued.
    """

    def __init__(self, pending: PendingLogin) -> None:
        kinds = ", ".join(kind.name for kind in pending.factor_types) or "none"
        what = "enrol a second factor" if pending.enrolment_required else "second factor required"
        super().__init__(f"{what} (factors: {kinds})")
        self.pending = pending


_Code = grpc.StatusCode

# What each reason raises, and the code the server sends it with; under another code a
# reason raises only that code's family (below).
_REASONS: Mapping[ErrorReason.ValueType, tuple[grpc.StatusCode, type[AuthsvcError]]] = {
    ErrorReason.INVALID_FIELD: (_Code.INVALID_ARGUMENT, InvalidArgument),
    ErrorReason.WEAK_PASSWORD: (_Code.INVALID_ARGUMENT, WeakPassword),
    ErrorReason.INVALID_PAGE_TOKEN: (_Code.INVALID_ARGUMENT, InvalidPageToken),
    ErrorReason.EMAIL_TAKEN: (_Code.ALREADY_EXISTS, EmailTaken),
    ErrorReason.REGISTRATION_DISABLED: (_Code.PERMISSION_DENIED, RegistrationDisabled),
    ErrorReason.INVALID_CREDENTIALS: (_Code.UNAUTHENTICATED, InvalidCredentials),
    ErrorReason.MISSING_CREDENTIALS: (_Code.UNAUTHENTICATED, MissingCredentials),
    ErrorReason.TOKEN_INVALID: (_Code.UNAUTHENTICATED, TokenInvalid),
    ErrorReason.TOKEN_EXPIRED: (_Code.UNAUTHENTICATED, TokenExpired),
    ErrorReason.REFRESH_TOKEN_INVALID: (_Code.UNAUTHENTICATED, RefreshTokenInvalid),
    ErrorReason.REFRESH_TOKEN_EXPIRED: (_Code.UNAUTHENTICATED, RefreshTokenExpired),
    ErrorReason.REFRESH_TOKEN_REUSED: (_Code.UNAUTHENTICATED, RefreshTokenReused),
    ErrorReason.SESSION_REVOKED: (_Code.UNAUTHENTICATED, SessionRevoked),
    ErrorReason.SESSION_EXPIRED: (_Code.UNAUTHENTICATED, SessionExpired),
    ErrorReason.SESSION_NOT_FOUND: (_Code.NOT_FOUND, SessionNotFound),
    ErrorReason.RATE_LIMITED: (_Code.RESOURCE_EXHAUSTED, RateLimited),
    ErrorReason.SERVER_BUSY: (_Code.RESOURCE_EXHAUSTED, RateLimited),
    ErrorReason.DATABASE_UNAVAILABLE: (_Code.UNAVAILABLE, DatabaseUnavailable),
    ErrorReason.NOT_READY: (_Code.UNAVAILABLE, NotReady),
    ErrorReason.DEADLINE_EXCEEDED: (_Code.DEADLINE_EXCEEDED, AuthsvcError),
    ErrorReason.INTERNAL: (_Code.INTERNAL, AuthsvcError),
    ErrorReason.SERVICE_CREDENTIALS_REQUIRED: (_Code.UNAUTHENTICATED, ServiceCredentialsRequired),
    ErrorReason.CURSOR_EXPIRED: (_Code.OUT_OF_RANGE, CursorExpired),
    ErrorReason.OPERATOR_CREDENTIALS_REQUIRED: (_Code.UNAUTHENTICATED, OperatorCredentialsRequired),
    ErrorReason.OPERATOR_NOT_ALLOWED: (_Code.PERMISSION_DENIED, OperatorNotAllowed),
    ErrorReason.USER_NOT_FOUND: (_Code.NOT_FOUND, UserNotFound),
    ErrorReason.USER_DISABLED: (_Code.PERMISSION_DENIED, UserDisabled),
    ErrorReason.PASSWORD_RESET_TOKEN_INVALID: (_Code.UNAUTHENTICATED, PasswordResetTokenInvalid),
    ErrorReason.SESSION_LIMIT_REACHED: (_Code.RESOURCE_EXHAUSTED, SessionLimitReached),
    ErrorReason.WEBHOOK_DELIVERY_NOT_FOUND: (_Code.NOT_FOUND, WebhookDeliveryNotFound),
    ErrorReason.SUBSCRIBER_TOO_SLOW: (_Code.RESOURCE_EXHAUSTED, SubscriberTooSlow),
    ErrorReason.STEP_UP_REQUIRED: (_Code.PERMISSION_DENIED, StepUpRequired),
    ErrorReason.SECOND_FACTOR_INVALID: (_Code.UNAUTHENTICATED, SecondFactorInvalid),
    ErrorReason.PENDING_LOGIN_INVALID: (_Code.UNAUTHENTICATED, PendingLoginInvalid),
    ErrorReason.FACTOR_NOT_FOUND: (_Code.NOT_FOUND, FactorNotFound),
    ErrorReason.PASSKEY_CHALLENGE_INVALID: (_Code.UNAUTHENTICATED, PasskeyChallengeInvalid),
    ErrorReason.PASSKEYS_DISABLED: (_Code.FAILED_PRECONDITION, PasskeysDisabled),
    ErrorReason.FACTOR_ALREADY_ENROLLED: (_Code.ALREADY_EXISTS, FactorAlreadyEnrolled),
}
# The same by the reason as sent: the value's name.
_BY_NAME = {ErrorReason.Name(reason): answer for reason, answer in _REASONS.items()}

# Reasons that mean the session is over: signing in again is the only way on.
SESSION_OVER_REASONS = frozenset(
    name for name, (_, error_type) in _BY_NAME.items() if issubclass(error_type, SessionExpired)
)

_BY_CODE: Mapping[grpc.StatusCode, type[AuthsvcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
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


def error_for(
    reason: ErrorReason.ValueType | str,
    message: str,
    *,
    code: grpc.StatusCode | None = None,
    metadata: Mapping[str, str] | None = None,
) -> AuthsvcError:
    """The exception for an answer with `reason`: the reason's class if `code` is the one the
    server sends it with (None means that code), else the code's family."""
    name = reason if isinstance(reason, str) else ErrorReason.Name(reason)
    known = _BY_NAME.get(name)
    if code is None:
        if known is None:
            raise ValueError(f"not an ErrorReason: {name!r}")
        code = known[0]
    if known is not None and known[0] is code:
        error_type = known[1]
    else:
        error_type = _BY_CODE.get(code, AuthsvcError)
    return error_type(message, code=code, reason=name, metadata=metadata)


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
    typed = error_for(reason, message, code=code, metadata=metadata)
    if isinstance(typed, RateLimited):
        retry = _unpacked(details, error_details_pb2.RetryInfo)
        typed.retry_delay = None if retry is None else retry.retry_delay.ToTimedelta()
    return typed
