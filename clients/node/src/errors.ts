// Typed errors: one class per ErrorInfo reason (the generated ErrorReason enum, from
// error_reason.proto), grouped by status code, and the one function (toAuthsvcError) that
// maps a ConnectError onto them.
//
// Branch on the class (`err instanceof InvalidCredentials`) or on `err.reason`; never on
// the message text. The names follow the server's (authsvc/core/errors.py) and the Python
// client's (authsvc_client._errors), SessionExpired grouping every session-over reason.

import { Code, ConnectError } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema, RetryInfoSchema, type ErrorInfo } from "./error_details.js";
import { SessionEndReason } from "./gen/authsvc/v1/auth_service_pb.js";
import { ErrorReason } from "./gen/authsvc/v1/error_reason_pb.js";
import { FactorType } from "./gen/authsvc/v1/second_factors_pb.js";

/** The ErrorInfo domain of every authsvc error. */
export const DOMAIN = "authsvc";

/** Every reason the service sends: the names of the generated ErrorReason's values. */
export type Reason = Exclude<keyof typeof ErrorReason, "ERROR_REASON_UNSPECIFIED">;

export interface AuthsvcErrorInit {
  code: Code;
  /** The server's message, without the "[code]" prefix. For people, not for branching. */
  message: string;
  /** The ErrorInfo reason; "" when the error carried none (e.g. a transport failure). */
  reason: string;
  domain?: string;
  metadata?: Readonly<Record<string, string>>;
  cause?: unknown;
}

/**
 * Base of every error the client throws: a gRPC status code plus the ErrorInfo
 * reason, domain and metadata. `cause` is the underlying ConnectError.
 */
export class AuthsvcError extends Error {
  readonly code: Code;
  /** Known reasons autocomplete; a reason added to the server later is still a string. */
  readonly reason: Reason | (string & {});
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly rawMessage: string;

  constructor(init: AuthsvcErrorInit) {
    const prefix = `[${Code[init.code] ?? init.code}${init.reason ? ` ${init.reason}` : ""}]`;
    super(init.message ? `${prefix} ${init.message}` : prefix, { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.reason = init.reason;
    this.domain = init.domain ?? "";
    this.metadata = init.metadata ?? {};
    this.rawMessage = init.message;
  }
}

/** INVALID_ARGUMENT. Reason INVALID_FIELD; `field` names the offending request field. */
export class InvalidArgument extends AuthsvcError {
  get field(): string | undefined {
    return this.metadata["field"];
  }
}
/** INVALID_ARGUMENT / WEAK_PASSWORD: the password breaks the policy. */
export class WeakPassword extends InvalidArgument {}
/** INVALID_ARGUMENT / INVALID_PAGE_TOKEN: not a page token this service issued for this caller. */
export class InvalidPageToken extends InvalidArgument {}

/** ALREADY_EXISTS, any reason. */
export class AlreadyExists extends AuthsvcError {}
/** ALREADY_EXISTS / EMAIL_TAKEN: Register with an email that has an account. */
export class EmailTaken extends AlreadyExists {}
/** ALREADY_EXISTS / FACTOR_ALREADY_ENROLLED: the user has a TOTP already (remove it first), or the passkey is registered already. */
export class FactorAlreadyEnrolled extends AlreadyExists {}
/** PERMISSION_DENIED, any reason. */
export class PermissionDenied extends AuthsvcError {}
/** PERMISSION_DENIED / REGISTRATION_DISABLED. */
export class RegistrationDisabled extends PermissionDenied {}
/** PERMISSION_DENIED / OPERATOR_NOT_ALLOWED: an AdminService call from a service not on the operator allow-list. */
export class OperatorNotAllowed extends PermissionDenied {}
/** PERMISSION_DENIED / USER_DISABLED: the account is disabled by an operator. */
export class UserDisabled extends PermissionDenied {}

/**
 * PERMISSION_DENIED / STEP_UP_REQUIRED: the call is sensitive and this session has not
 * verified the user's second factor recently enough: `stepUp()` with one of `factorTypes`,
 * then make the call again. No `factorTypes` means the user has no factor and the session
 * began before the step-up window: sign in again.
 *
 * The client never retries or refreshes this away, and the session stays signed in: only
 * the user can answer it.
 */
export class StepUpRequired extends PermissionDenied {
  /**
   * The factors the user can step up with, from the ErrorInfo metadata `factor_types`
   * (FactorType names, comma-separated); a kind newer than this client is UNSPECIFIED.
   */
  get factorTypes(): FactorType[] {
    return (this.metadata["factor_types"] ?? "")
      .split(",")
      .map((name) => name.trim())
      .filter((name) => name !== "")
      .map((name) => {
        const value = (FactorType as unknown as Record<string, number | undefined>)[name.replace(/^FACTOR_TYPE_/, "")];
        return typeof value === "number" ? (value as FactorType) : FactorType.UNSPECIFIED;
      });
  }
}
/** NOT_FOUND, any reason. */
export class NotFound extends AuthsvcError {}
/** NOT_FOUND / SESSION_NOT_FOUND: no such session among the caller's. */
export class SessionNotFound extends NotFound {}
/** NOT_FOUND / USER_NOT_FOUND: AdminService names a user that does not exist (or no longer). */
export class UserNotFound extends NotFound {}
/** NOT_FOUND / WEBHOOK_DELIVERY_NOT_FOUND: AdminService names a webhook delivery that does not exist (or no longer). */
export class WebhookDeliveryNotFound extends NotFound {}
/** NOT_FOUND / FACTOR_NOT_FOUND: no such factor (or unconfirmed enrolment) among the caller's. */
export class FactorNotFound extends NotFound {}

/** FAILED_PRECONDITION, any reason: the server is not set up for this call. */
export class FailedPrecondition extends AuthsvcError {}
/** FAILED_PRECONDITION / PASSKEYS_DISABLED: the server has no WebAuthn relying party configured. */
export class PasskeysDisabled extends FailedPrecondition {}

/** UNAUTHENTICATED, any reason. */
export class Unauthenticated extends AuthsvcError {}
/** Wrong password or unknown email: the server does not say which. */
export class InvalidCredentials extends Unauthenticated {}
/** The call needed `authorization: Bearer <access token>` and had none (not signed in). */
export class MissingCredentials extends Unauthenticated {}
/**
 * The RPC is for internal services and the call carried no service key or allowed client
 * certificate (SERVICE_CREDENTIALS_REQUIRED); a user's access token is not one.
 */
export class ServiceCredentialsRequired extends Unauthenticated {}
/** UNAUTHENTICATED / OPERATOR_CREDENTIALS_REQUIRED: an AdminService call without an operator's service key or client certificate. */
export class OperatorCredentialsRequired extends Unauthenticated {}
/** UNAUTHENTICATED / PASSWORD_RESET_TOKEN_INVALID: the reset token is unknown, used or expired. */
export class PasswordResetTokenInvalid extends Unauthenticated {}
/**
 * UNAUTHENTICATED / SECOND_FACTOR_INVALID: the TOTP code, recovery code or passkey assertion
 * is wrong, already used or outside the time window. Throttled like a wrong password; the
 * session (or the pending login, for a few more tries) stays.
 */
export class SecondFactorInvalid extends Unauthenticated {}
/** UNAUTHENTICATED / PENDING_LOGIN_INVALID: the pending login is unknown, used, expired or out of attempts: login() again. */
export class PendingLoginInvalid extends Unauthenticated {}
/** UNAUTHENTICATED / PASSKEY_CHALLENGE_INVALID: the WebAuthn challenge is unknown, used, expired or for another purpose: begin again. */
export class PasskeyChallengeInvalid extends Unauthenticated {}
/** The access token is malformed, forged or not this service's. */
export class TokenInvalid extends Unauthenticated {}
/** The access token is past its `exp`. The token manager refreshes and retries once. */
export class TokenExpired extends Unauthenticated {}

/**
 * The session is over: only signing in again helps.
 *
 * One class for every way a session ends, so callers need one `instanceof` (as in the
 * Python client); `reason` says which: SESSION_EXPIRED (idle timeout or absolute lifetime),
 * SESSION_REVOKED (logged out or revoked), REFRESH_TOKEN_REUSED (a spent refresh token was
 * replayed, so the server revoked the session as stolen), REFRESH_TOKEN_EXPIRED or
 * REFRESH_TOKEN_INVALID. The subclasses below name each reason. The token manager throws
 * the refresh's SessionExpired to every call waiting on it, and to later calls.
 */
export class SessionExpired extends Unauthenticated {
  /**
   * Why the session ended (PASSWORD_CHANGED, IDLE_TIMEOUT, ...), from the ErrorInfo metadata
   * `end_reason`; UNSPECIFIED when the server did not say (it no longer keeps the session, or
   * the reason is newer than this client).
   */
  get endReason(): SessionEndReason {
    const name = (this.metadata["end_reason"] ?? "").replace(/^SESSION_END_REASON_/, "");
    const value = (SessionEndReason as unknown as Record<string, number | undefined>)[name];
    return typeof value === "number" ? (value as SessionEndReason) : SessionEndReason.UNSPECIFIED;
  }

  /** When the session ended, from the ErrorInfo metadata `ended_at` (RFC 3339); undefined when not said. */
  get endedAt(): Date | undefined {
    const text = this.metadata["ended_at"];
    const instant = text ? new Date(text) : undefined;
    return instant && !Number.isNaN(instant.getTime()) ? instant : undefined;
  }
}
/** The session was logged out or revoked. */
export class SessionRevoked extends SessionExpired {}
/** A rotated refresh token was replayed; the server has revoked the whole session. */
export class RefreshTokenReused extends SessionExpired {}
/** The refresh token is past its expiry. */
export class RefreshTokenExpired extends SessionExpired {}
/** The refresh token is unknown to the server. */
export class RefreshTokenInvalid extends SessionExpired {}

/** RESOURCE_EXHAUSTED / RATE_LIMITED or SERVER_BUSY; wait `retryDelayMs` (from google.rpc.RetryInfo) first. */
export class RateLimited extends AuthsvcError {
  retryDelayMs: number | undefined;
}

/** RESOURCE_EXHAUSTED / SUBSCRIBER_TOO_SLOW: WatchRevocations cut this subscriber off, a whole buffer behind; resume from the last cursor received. */
export class SubscriberTooSlow extends RateLimited {}

/**
 * RESOURCE_EXHAUSTED / SESSION_LIMIT_REACHED: the user has as many live sessions as the server's
 * limit allows and its policy refuses more; sign out on another device first. Waiting does not
 * help, so this is not a RateLimited.
 */
export class SessionLimitReached extends AuthsvcError {}

/** OUT_OF_RANGE, any reason. */
export class OutOfRange extends AuthsvcError {}
/** OUT_OF_RANGE / CURSOR_EXPIRED: the WatchRevocations cursor is older than the log keeps; start again from cursor 0 (a snapshot). */
export class CursorExpired extends OutOfRange {}

/** UNAVAILABLE: retry with backoff. Also a connection that could not be made. */
export class Unavailable extends AuthsvcError {}
export class DatabaseUnavailable extends Unavailable {}
/** The server is still starting (migrating, loading keys), or stopping. */
export class NotReady extends Unavailable {}
/**
 * A subscribed TokenVerifier refused a token because its revocation feed is stale (no
 * heartbeat lately) and it was told not to ask the server instead. Not a server reason.
 */
export class RevocationFeedStale extends Unavailable {}

type ErrorClass = new (init: AuthsvcErrorInit) => AuthsvcError;

// Every reason, so a value added to the enum fails to compile until it has its class.
const BY_REASON: Record<Reason, ErrorClass> = {
  INVALID_FIELD: InvalidArgument,
  WEAK_PASSWORD: WeakPassword,
  INVALID_PAGE_TOKEN: InvalidPageToken,
  EMAIL_TAKEN: EmailTaken,
  REGISTRATION_DISABLED: RegistrationDisabled,
  INVALID_CREDENTIALS: InvalidCredentials,
  MISSING_CREDENTIALS: MissingCredentials,
  TOKEN_INVALID: TokenInvalid,
  TOKEN_EXPIRED: TokenExpired,
  REFRESH_TOKEN_INVALID: RefreshTokenInvalid,
  REFRESH_TOKEN_EXPIRED: RefreshTokenExpired,
  REFRESH_TOKEN_REUSED: RefreshTokenReused,
  SESSION_REVOKED: SessionRevoked,
  SESSION_EXPIRED: SessionExpired,
  SESSION_NOT_FOUND: SessionNotFound,
  RATE_LIMITED: RateLimited,
  SERVER_BUSY: RateLimited,
  DATABASE_UNAVAILABLE: DatabaseUnavailable,
  NOT_READY: NotReady,
  DEADLINE_EXCEEDED: AuthsvcError,
  INTERNAL: AuthsvcError,
  SERVICE_CREDENTIALS_REQUIRED: ServiceCredentialsRequired,
  CURSOR_EXPIRED: CursorExpired,
  SUBSCRIBER_TOO_SLOW: SubscriberTooSlow,
  OPERATOR_CREDENTIALS_REQUIRED: OperatorCredentialsRequired,
  OPERATOR_NOT_ALLOWED: OperatorNotAllowed,
  USER_NOT_FOUND: UserNotFound,
  USER_DISABLED: UserDisabled,
  PASSWORD_RESET_TOKEN_INVALID: PasswordResetTokenInvalid,
  SESSION_LIMIT_REACHED: SessionLimitReached,
  WEBHOOK_DELIVERY_NOT_FOUND: WebhookDeliveryNotFound,
  STEP_UP_REQUIRED: StepUpRequired,
  SECOND_FACTOR_INVALID: SecondFactorInvalid,
  PENDING_LOGIN_INVALID: PendingLoginInvalid,
  FACTOR_NOT_FOUND: FactorNotFound,
  PASSKEY_CHALLENGE_INVALID: PasskeyChallengeInvalid,
  PASSKEYS_DISABLED: PasskeysDisabled,
  FACTOR_ALREADY_ENROLLED: FactorAlreadyEnrolled,
};

// For a reason this client does not know yet (or no ErrorInfo at all): the code's family.
const BY_CODE: Partial<Record<Code, ErrorClass>> = {
  [Code.InvalidArgument]: InvalidArgument,
  [Code.AlreadyExists]: AlreadyExists,
  [Code.PermissionDenied]: PermissionDenied,
  [Code.NotFound]: NotFound,
  [Code.Unauthenticated]: Unauthenticated,
  [Code.ResourceExhausted]: RateLimited,
  [Code.OutOfRange]: OutOfRange,
  [Code.Unavailable]: Unavailable,
  [Code.FailedPrecondition]: FailedPrecondition,
};

function isKnownReason(reason: string): reason is Reason {
  return Object.hasOwn(BY_REASON, reason);
}

/** The ErrorInfo of an authsvc error: the one with domain "authsvc", else the first. */
export function errorInfoOf(error: ConnectError): ErrorInfo | undefined {
  const infos = error.findDetails(ErrorInfoSchema);
  return infos.find((info) => info.domain === DOMAIN) ?? infos[0];
}

/**
 * The typed error for an authsvc `reason` (an ErrorInfo's, or ValidateToken's
 * inactive_reason); a reason this client does not know gets its code's class.
 */
export function errorFor(code: Code, reason: string, message: string): AuthsvcError {
  const ErrorType = (isKnownReason(reason) ? BY_REASON[reason] : undefined) ?? BY_CODE[code] ?? AuthsvcError;
  return new ErrorType({ code, message, reason, domain: DOMAIN });
}

/**
 * Map anything a Connect call threw onto the typed errors. An AuthsvcError passes through;
 * a ConnectError whose cause is one (an interceptor's) is unwrapped.
 */
export function toAuthsvcError(error: unknown): AuthsvcError {
  if (error instanceof AuthsvcError) {
    return error;
  }
  const connectError = ConnectError.from(error);
  if (connectError.cause instanceof AuthsvcError) {
    return connectError.cause;
  }
  const info = errorInfoOf(connectError);
  const reason = info?.reason ?? "";
  const byReason = info?.domain === DOMAIN && isKnownReason(reason) ? BY_REASON[reason] : undefined;
  const ErrorType = byReason ?? BY_CODE[connectError.code] ?? AuthsvcError;
  const typed = new ErrorType({
    code: connectError.code,
    message: connectError.rawMessage,
    reason,
    domain: info?.domain ?? "",
    metadata: { ...(info?.metadata ?? {}) },
    cause: connectError,
  });
  if (typed instanceof RateLimited) {
    const retry = connectError.findDetails(RetryInfoSchema)[0];
    typed.retryDelayMs = retry?.retryDelay ? durationMs(retry.retryDelay) : undefined;
  }
  return typed;
}
