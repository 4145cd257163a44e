"""Python client for authsvc.

- AuthClient (grpc.aio) and SyncAuthClient: every RPC as a typed method, frozen results,
  failures as AuthsvcError subclasses chosen by ErrorInfo.reason.
- TokenManager: the session's tokens, refreshed before they expire and once after the
  service says they have, one Refresh however many calls need it; TokenStore to keep them
  (InMemoryTokenStore, FileTokenStore).
- BearerAuthInterceptor: the managed access token on a channel to any service.
- TokenVerifier and TokenAuthInterceptor: for internal services that accept authsvc tokens;
  subscribed to the revocation feed, the verifier refuses a logged-out session's tokens
  offline within about a second.
"""

from importlib.resources import files

from authsvc_client._bearer import BearerAuthInterceptor
from authsvc_client._client import DEFAULT_TIMEOUT, AuthClient
from authsvc_client._errors import (
    AlreadyExists,
    AuthsvcError,
    CursorExpired,
    DatabaseUnavailable,
    EmailTaken,
    InvalidArgument,
    InvalidCredentials,
    InvalidPageToken,
    MissingCredentials,
    NotFound,
    NotReady,
    OperatorCredentialsRequired,
    OperatorNotAllowed,
    OutOfRange,
    PasswordResetTokenInvalid,
    PermissionDenied,
    RateLimited,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    RefreshTokenReused,
    RegistrationDisabled,
    RevocationFeedStale,
    ServiceCredentialsRequired,
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionRevoked,
    SubscriberTooSlow,
    TokenExpired,
    TokenInvalid,
    Unauthenticated,
    Unavailable,
    UserDisabled,
    UserNotFound,
    WeakPassword,
    WebhookDeliveryNotFound,
    error_from_rpc,
)
from authsvc_client._manager import (
    DEFAULT_REFRESH_SKEW,
    Refresher,
    SessionExpiredCallback,
    TokenManager,
)
from authsvc_client._models import (
    DeviceType,
    FeedEvent,
    Heartbeat,
    LogoutScope,
    Principal,
    Revocation,
    Session,
    SessionEndReason,
    SessionPage,
    TokenPair,
    TokenValidation,
)
from authsvc_client._server import TokenAuthInterceptor, current_principal
from authsvc_client._service_config import DEFAULT_SERVICE_CONFIG
from authsvc_client._store import FileTokenStore, InMemoryTokenStore, TokenStore
from authsvc_client._sync import SyncAuthClient
from authsvc_client._verifier import (
    DEFAULT_JWKS_REFETCH_INTERVAL,
    DEFAULT_LEEWAY,
    DEFAULT_STALE_AFTER,
    JwksSource,
    RevocationSource,
    TokenVerifier,
    WhenStale,
)

# The release of the API this client speaks: VERSION is a link to the server's own file.
__version__ = files(__name__).joinpath("VERSION").read_text(encoding="utf-8").strip()

__all__ = [
    "DEFAULT_JWKS_REFETCH_INTERVAL",
    "DEFAULT_LEEWAY",
    "DEFAULT_REFRESH_SKEW",
    "DEFAULT_SERVICE_CONFIG",
    "DEFAULT_STALE_AFTER",
    "DEFAULT_TIMEOUT",
    "AlreadyExists",
    "AuthClient",
    "AuthsvcError",
    "BearerAuthInterceptor",
    "CursorExpired",
    "DatabaseUnavailable",
    "DeviceType",
    "EmailTaken",
    "FeedEvent",
    "FileTokenStore",
    "Heartbeat",
    "InMemoryTokenStore",
    "InvalidArgument",
    "InvalidCredentials",
    "InvalidPageToken",
    "JwksSource",
    "LogoutScope",
    "MissingCredentials",
    "NotFound",
    "NotReady",
    "OperatorCredentialsRequired",
    "OperatorNotAllowed",
    "OutOfRange",
    "PasswordResetTokenInvalid",
    "PermissionDenied",
    "Principal",
    "RateLimited",
    "RefreshTokenExpired",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "Refresher",
    "RegistrationDisabled",
    "Revocation",
    "RevocationFeedStale",
    "RevocationSource",
    "ServiceCredentialsRequired",
    "Session",
    "SessionEndReason",
    "SessionExpired",
    "SessionExpiredCallback",
    "SessionLimitReached",
    "SessionNotFound",
    "SessionPage",
    "SessionRevoked",
    "SubscriberTooSlow",
    "SyncAuthClient",
    "TokenAuthInterceptor",
    "TokenExpired",
    "TokenInvalid",
    "TokenManager",
    "TokenPair",
    "TokenStore",
    "TokenValidation",
    "TokenVerifier",
    "Unauthenticated",
    "Unavailable",
    "UserDisabled",
    "UserNotFound",
    "WeakPassword",
    "WebhookDeliveryNotFound",
    "WhenStale",
    "current_principal",
    "error_from_rpc",
]
