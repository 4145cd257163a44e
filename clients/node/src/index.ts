// Public API of the authsvc Node client.

export {
  AuthClient,
  type AuthClientOptions,
  type ChangePasswordInput,
  type FeedEvent,
  type Heartbeat,
  type Jwk,
  type Jwks,
  type ListSessionsInput,
  type LoginInput,
  type RegisterInput,
  type ResetPasswordInput,
  type Revocation,
  type SessionInfo,
  type SessionPage,
  type SessionRecord,
  type TokenValidation,
} from "./client.js";
export {
  DEFAULT_REFRESH_SKEW_MS,
  TokenManager,
  type RefreshFn,
  type TokenManagerOptions,
  type Tokens,
} from "./token_manager.js";
export { authInterceptor, type AuthInterceptorOptions } from "./interceptor.js";
export {
  retryInterceptor,
  SERVICE_CONFIG,
  type MethodConfig,
  type RetryPolicy,
  type ServiceConfig,
} from "./retry.js";
export {
  DEFAULT_JWKS_REFETCH_INTERVAL_MS,
  DEFAULT_LEEWAY_MS,
  TokenVerifier,
  type JwksSource,
  type Principal,
  type RevocationOptions,
  type RevocationSource,
  type TokenVerifierOptions,
  type WhenStale,
} from "./verifier.js";
export {
  DEFAULT_STALE_AFTER_MS,
  RevocationFeed,
  type FeedSource,
  type FeedStatus,
  type RevocationFeedOptions,
  type RevocationFeedSettings,
} from "./revocations.js";
export {
  AlreadyExists,
  AuthsvcError,
  CursorExpired,
  DatabaseUnavailable,
  DOMAIN,
  EmailTaken,
  errorFor,
  errorInfoOf,
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
  toAuthsvcError,
  TokenExpired,
  TokenInvalid,
  Unauthenticated,
  Unavailable,
  UserDisabled,
  UserNotFound,
  WeakPassword,
  WebhookDeliveryNotFound,
  type AuthsvcErrorInit,
  type Reason,
} from "./errors.js";
export { ErrorInfoSchema, RetryInfoSchema, type ErrorInfo, type RetryInfo } from "./error_details.js";
export { AuthService, DeviceType, LogoutScope, SessionEndReason } from "./gen/authsvc/v1/auth_service_pb.js";
export { ErrorReason } from "./gen/authsvc/v1/error_reason_pb.js";
export { VERSION } from "./version.js";
// For AuthClientOptions.connection: one HTTP/2 connection shared by many clients.
export { Http2SessionManager } from "@connectrpc/connect-node";
