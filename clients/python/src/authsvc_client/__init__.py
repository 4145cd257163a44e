"""Python client for authsvc.

- AuthClient (grpc.aio) and SyncAuthClient: every RPC as a typed method, frozen results,
  failures as AuthsvcError subclasses chosen by ErrorInfo.reason.
- TokenManager: the session's tokens, refreshed before they expire and once after the
  service says they have, one Refresh however many calls need it; TokenStore to keep them
  (InMemoryTokenStore, FileTokenStore).
- BearerAuthInterceptor: the managed access token on a channel to any service.
- TokenVerifier and TokenAuthInterceptor: for internal services that accept authsvc tokens.
"""

from authsvc_client._bearer import BearerAuthInterceptor
from authsvc_client._client import DEFAULT_TIMEOUT, AuthClient
from authsvc_client._errors import (
    AlreadyExists,
    AuthsvcError,
    InvalidArgument,
    InvalidCredentials,
    MissingCredentials,
    NotFound,
    PermissionDenied,
    RateLimited,
    SessionExpired,
    TokenExpired,
    TokenInvalid,
    Unauthenticated,
    Unavailable,
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
    LogoutScope,
    Principal,
    Session,
    SessionPage,
    TokenPair,
    TokenValidation,
)
from authsvc_client._server import TokenAuthInterceptor, current_principal
from authsvc_client._store import FileTokenStore, InMemoryTokenStore, TokenStore
from authsvc_client._sync import SyncAuthClient
from authsvc_client._verifier import DEFAULT_JWKS_REFETCH_INTERVAL, JwksSource, TokenVerifier

__all__ = [
    "DEFAULT_JWKS_REFETCH_INTERVAL",
    "DEFAULT_REFRESH_SKEW",
    "DEFAULT_TIMEOUT",
    "AlreadyExists",
    "AuthClient",
    "AuthsvcError",
    "BearerAuthInterceptor",
    "DeviceType",
    "FileTokenStore",
    "InMemoryTokenStore",
    "InvalidArgument",
    "InvalidCredentials",
    "JwksSource",
    "LogoutScope",
    "MissingCredentials",
    "NotFound",
    "PermissionDenied",
    "Principal",
    "RateLimited",
    "Refresher",
    "Session",
    "SessionExpired",
    "SessionExpiredCallback",
    "SessionPage",
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
    "current_principal",
    "error_from_rpc",
]
