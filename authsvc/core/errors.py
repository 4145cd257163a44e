"""The errors the service can answer with.

`api/errors.py` chooses each class's gRPC status code and the stable ErrorInfo
reason clients branch on, in one table, from the proto's ErrorReason enum.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from authsvc.core.models import Principal, SessionEndReason

__all__ = [
    "AuthError",
    "CursorExpired",
    "DatabaseUnavailable",
    "EmailTaken",
    "FactorAlreadyEnrolled",
    "FactorNotFound",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidPageToken",
    "MissingCredentials",
    "NotReady",
    "OperatorCredentialsRequired",
    "OperatorNotAllowed",
    "PasskeyChallengeInvalid",
    "PasskeysDisabled",
    "PasswordResetTokenInvalid",
    "PendingLoginInvalid",
    "RateLimited",
    "RefreshTokenExpired",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "RegistrationDisabled",
    "SecondFactorInvalid",
    "ServerBusy",
    "ServiceCredentialsRequired",
    "SessionEnded",
    "SessionExpired",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionRevoked",
    "StepUpRequired",
    "SubscriberTooSlow",
    "TokenExpired",
    "TokenInvalid",
    "Unauthenticated",
    "UserDisabled",
    "UserNotFound",
    "WeakPassword",
    "WebhookDeliveryNotFound",
]


class AuthError(Exception):
    """Base of every error the service answers with on purpose."""

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata


class InvalidArgument(AuthError):
    """A request field is malformed; `metadata["field"]` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class WeakPassword(InvalidArgument):
    """The new password breaks the policy."""


class InvalidPageToken(InvalidArgument):
    """A page token not issued for this caller and request."""

    def __init__(self) -> None:
        super().__init__("page_token", "page_token was not issued for this request")


class EmailTaken(AuthError):
    """Register with an email that has an account (only when accounts may be revealed)."""


class RegistrationDisabled(AuthError):
    """Register is switched off."""


class SessionNotFound(AuthError):
    """No such session among the caller's."""


class Unauthenticated(AuthError):
    """Base of the errors that mean: these credentials do not let you in."""


class InvalidCredentials(Unauthenticated):
    """Wrong password or unknown email; the answer does not say which."""


class MissingCredentials(Unauthenticated):
    """The call needs an access token and carried none."""


class ServiceCredentialsRequired(Unauthenticated):
    """An RPC for internal services, called without a service key the server knows or an
    allow-listed client certificate. A user's access token is not a service credential."""


class OperatorCredentialsRequired(Unauthenticated):
    """An AdminService call without a service key or client certificate the server knows.
    A user's access token is not an operator credential."""


class OperatorNotAllowed(AuthError):
    """An AdminService call from a known service that is not on the operator allow-list."""


class UserNotFound(AuthError):
    """An operator named a user that does not exist, or no longer does."""


class UserDisabled(AuthError):
    """The account is disabled by an operator; told only after the password is verified."""


class PasswordResetTokenInvalid(Unauthenticated):
    """A password-reset token that is unknown, used or expired: the answer does not say which."""


class SessionLimitReached(AuthError):
    """The user has as many live sessions as the limit allows, and its policy refuses more;
    told only after the password is verified."""


class WebhookDeliveryNotFound(AuthError):
    """An operator named a webhook delivery that does not exist, or no longer does."""


class StepUpRequired(AuthError):
    """A sensitive RPC, and the session has not verified the user's second factor within
    the step-up window; `metadata["factor_types"]` lists what the user can step up with."""

    def __init__(self, message: str, *, factor_types: str) -> None:
        super().__init__(message, factor_types=factor_types)


class SecondFactorInvalid(Unauthenticated):
    """A wrong, used or out-of-window TOTP code, recovery code or passkey assertion."""


class PendingLoginInvalid(Unauthenticated):
    """A pending login token that is unknown, used, expired, out of attempts, or not good
    for this RPC: the answer does not say which."""


class FactorNotFound(AuthError):
    """No such factor, or unconfirmed enrolment, among the user's."""


class PasskeyChallengeInvalid(Unauthenticated):
    """A WebAuthn challenge that is unknown, used, expired or for another purpose."""


class PasskeysDisabled(AuthError):
    """The server has no WebAuthn relying party configured."""


class FactorAlreadyEnrolled(AuthError):
    """The user has a TOTP factor already, or the passkey is registered already."""


class TokenInvalid(Unauthenticated):
    """The access token is malformed, forged, not ours, or not valid yet."""


class TokenExpired(Unauthenticated):
    """Our token, validly signed, past its `exp`; carries who it was for."""

    def __init__(self, message: str, *, principal: Principal) -> None:
        super().__init__(message)
        self.principal = principal


class RefreshTokenInvalid(Unauthenticated):
    """The refresh token is unknown."""


class RefreshTokenExpired(Unauthenticated):
    """The refresh token is past its expiry."""


class SessionEnded(Unauthenticated):
    """Base of the refusals because the session ended: why (`end_reason`) and when
    (`ended_at`), when known; the api sends both in the ErrorInfo metadata."""

    def __init__(
        self,
        message: str,
        *,
        end_reason: SessionEndReason | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.end_reason = end_reason
        self.ended_at = ended_at


class RefreshTokenReused(SessionEnded):
    """An already-rotated refresh token came back; its session is revoked."""


class SessionRevoked(SessionEnded):
    """The session was logged out or revoked."""


class SessionExpired(SessionEnded):
    """The session passed its idle timeout or absolute lifetime."""


class RateLimited(AuthError):
    """Too many failed attempts; try again after `retry_after`."""

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusy(RateLimited):
    """This process has no password-hashing capacity free; retry after `retry_after`.
    Refused at once rather than queued past the caller's deadline."""


class CursorExpired(AuthError):
    """A revocation-feed cursor older than the log's retention: what followed it may be
    swept, so the subscriber must start again from a snapshot (cursor 0)."""


class SubscriberTooSlow(AuthError):
    """A revocation-feed subscriber fell a whole buffer behind and was cut off, so that it
    holds up neither the server nor other subscribers; it resumes from its last cursor."""


class DatabaseUnavailable(AuthError):
    """The database cannot be reached, used, or did not answer in time; retryable.

    `detail` says what failed (connection refused, authentication failed...) for the
    operator's log and the CLI; clients get only the message.
    """

    def __init__(self, message: str = "database unavailable", *, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class NotReady(AuthError):
    """The service has not finished starting (no database or keys yet), or is stopping."""
