// AuthClient: one typed method per AuthService RPC over real gRPC (HTTP/2), typed errors,
// and a TokenManager that keeps the signed-in session's access token fresh.

import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type CallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  AuthService,
  LogoutScope,
  type DeviceType,
  type Session,
  type SessionEndReason,
  type WatchRevocationsResponse,
} from "./gen/authsvc/v1/auth_service_pb.js";
import type { AssuranceLevel, Factor, SecondFactorStep } from "./gen/authsvc/v1/second_factors_pb.js";
import { AuthsvcError, SessionExpired, toAuthsvcError } from "./errors.js";
import { authInterceptor } from "./interceptor.js";
import { retryInterceptor, SERVICE_CONFIG, type ServiceConfig } from "./retry.js";
import {
  factorProofInit,
  SecondFactorRequired,
  type FactorInfo,
  type FactorList,
  type FactorProof,
  type PendingLogin,
  type RecoveryCodes,
  type SteppedUp,
  type TotpConfirmation,
  type TotpEnrolment,
} from "./second_factors.js";
import { TokenManager, type Tokens } from "./token_manager.js";

export interface AuthClientOptions {
  /** The server, e.g. "http://127.0.0.1:50051" (plaintext HTTP/2) or "https://..." (TLS). */
  baseUrl: string;
  /** Refresh this long before the access token expires. Default 60 000 (60 s). */
  refreshSkewMs?: number;
  /** The clock for proactive refresh. Default: `() => new Date()`. Tests inject their own. */
  now?: () => Date;
  /** Called once when the session ends because a refresh failed for good (sign in again). */
  onSessionExpired?: (error: SessionExpired) => void;
  /** Called with every new token pair; persist `refreshToken` here to resume later. */
  onTokens?: (tokens: Tokens) => void;
  /** A stored session to resume (the pair from onTokens). */
  tokens?: Tokens;
  /** Extra interceptors, outermost first; they run around the auth interceptor. */
  interceptors?: Interceptor[];
  /** Deadline for each call (refresh and retry included). Default: none. */
  timeoutMs?: number;
  /** Deadline for the Refresh RPC the token manager makes. Default 10 000. */
  refreshTimeoutMs?: number;
  /** Sent as the gRPC user agent; the server records it per session (device, browser, OS). */
  userAgent?: string;
  /**
   * Sensitive. This service's key (`authsvc service-key create`), sent as
   * `authorization: Bearer <key>` on the service RPCs: WatchRevocations, and ValidateToken
   * and GetJwks (which a server may require it on). Never on a user's calls; never logged.
   */
  serviceKey?: string;
  /**
   * Which unary RPCs are retried, and how: a gRPC service config. Default SERVICE_CONFIG,
   * the published one (retries on UNAVAILABLE for the RPCs safe to repeat); `{}` retries
   * nothing.
   */
  serviceConfig?: ServiceConfig;
  /**
   * An HTTP/2 connection to share with other clients of the same server
   * (`new Http2SessionManager(baseUrl)` from `@connectrpc/connect-node`), so that many
   * signed-in users of one process (a backend-for-frontend) need one connection, not one
   * each. Its owner closes it (`abort()`); `close()` of a client then leaves it open.
   */
  connection?: Http2SessionManager;
}

export interface RegisterInput {
  email: string;
  /** Sensitive. */
  password: string;
  displayName?: string;
  /** Longer absolute session lifetime (30 days instead of 7). */
  rememberMe?: boolean;
  /** A label for this device, e.g. "Work laptop". */
  deviceName?: string;
}

export interface LoginInput {
  email: string;
  /** Sensitive. */
  password: string;
  rememberMe?: boolean;
  deviceName?: string;
}

export interface ChangePasswordInput {
  /** Sensitive. The password the account has now. */
  currentPassword: string;
  /** Sensitive. Held to the same policy as Register's password. */
  newPassword: string;
}

export interface ResetPasswordInput {
  /** Sensitive. The token from AdminService.CreatePasswordResetToken; good once. */
  resetToken: string;
  /** Sensitive. The same rules as Register's password. */
  newPassword: string;
}

export interface ListSessionsInput {
  /** 0 or unset: 50; above 1000: 1000. */
  pageSize?: number;
  /** nextPageToken of the previous page. */
  pageToken?: string;
}

/** One signed-in device of the caller. */
export interface SessionInfo {
  sessionId: string;
  createdAt: Date;
  lastActiveAt: Date;
  idleExpiresAt: Date;
  expiresAt: Date;
  deviceType: DeviceType;
  browser: string;
  os: string;
  deviceName: string;
  ipAddress: string;
  userAgent: string;
  /** True for the session this client is signed in with. */
  current: boolean;
  rememberMe: boolean;
  /**
   * Where ipAddress was at login: ISO 3166-1 alpha-2 country ("DE") and city in English.
   * Empty when unknown, or when the server has no GeoIP database configured.
   */
  country: string;
  city: string;
  /** How strongly the user proved who they are in this session (Refresh keeps it). */
  assuranceLevel: AssuranceLevel;
}

/** One of the caller's sessions, live or ended, as GetSession answers. */
export interface SessionRecord extends SessionInfo {
  /** When it ended; undefined while it is live. */
  endedAt: Date | undefined;
  /** Why it ended; UNSPECIFIED while it is live. */
  endReason: SessionEndReason;
}

export interface SessionPage {
  sessions: SessionInfo[];
  /** Empty on the last page. */
  nextPageToken: string;
}

export interface TokenValidation {
  active: boolean;
  /** An ErrorInfo reason (TOKEN_EXPIRED, TOKEN_INVALID, SESSION_REVOKED, ...); "" when active. */
  inactiveReason: string;
  /** Set when the signature is valid ("" otherwise), as are the fields below. */
  userId: string;
  sessionId: string;
  expiresAt: Date | undefined;
  issuedAt: Date | undefined;
  claims: JsonObject;
  /** Why the token's session ended, when inactiveReason is SESSION_REVOKED or SESSION_EXPIRED (else UNSPECIFIED). */
  endReason: SessionEndReason;
  /** When the token's session ended, beside endReason. */
  endedAt: Date | undefined;
  /** The token's `acr` claim as a level; set when the signature is valid. */
  assuranceLevel: AssuranceLevel;
  /** The token's `amr` claim (RFC 8176), e.g. ["pwd", "otp", "mfa"]. */
  amr: string[];
}

export interface EnrolTotpInput {
  /** A label, e.g. "Phone"; at most 100 characters. */
  name?: string;
  /**
   * A login that answered `enrolmentRequired` (the SecondFactorRequired's `pending`, or its
   * token): the credential instead of this client's session.
   */
  pending?: PendingLogin | string;
}

export interface ConfirmTotpInput {
  /** TotpEnrolment.factorId. */
  factorId: string;
  /** The 6 digits the app shows now. */
  code: string;
  /** As in EnrolTotpInput. */
  pending?: PendingLogin | string;
}

/** One JSON Web Key (RFC 7517) of the set GetJwks returns. */
export interface Jwk {
  kty: string;
  kid: string;
  alg?: string;
  use?: string;
  crv?: string;
  x?: string;
  y?: string;
  [member: string]: unknown;
}

export interface Jwks {
  keys: Jwk[];
}

/** A session ended: deny its access tokens until `tokensExpireBy`. */
export interface Revocation {
  kind: "revocation";
  /** Its place in the feed; cursors only grow. */
  cursor: bigint;
  sessionId: string;
  userId: string;
  reason: SessionEndReason;
  revokedAt: Date;
  /** Every access token of the session has expired by then (the server's clock skew included). */
  tokensExpireBy: Date;
}

/** The feed is alive, and every revocation up to `cursor` has been sent. */
export interface Heartbeat {
  kind: "heartbeat";
  cursor: bigint;
  sentAt: Date;
}

/** One event of WatchRevocations. */
export type FeedEvent = Revocation | Heartbeat;

/** Tokens from a Register, Login or Refresh response (they share these field names). */
interface TokenResponse {
  accessToken: string;
  accessTokenExpiresAt?: Timestamp | undefined;
  refreshToken: string;
  refreshTokenExpiresAt?: Timestamp | undefined;
  sessionId: string;
  userId: string;
}

function requiredDate(value: Timestamp | undefined, field: string): Date {
  if (value === undefined) {
    throw new AuthsvcError({ code: Code.Internal, message: `response lacks ${field}`, reason: "" });
  }
  return timestampDate(value);
}

function tokensOf(response: TokenResponse): Tokens {
  return {
    accessToken: response.accessToken,
    accessTokenExpiresAt: requiredDate(response.accessTokenExpiresAt, "access_token_expires_at"),
    refreshToken: response.refreshToken,
    refreshTokenExpiresAt: requiredDate(response.refreshTokenExpiresAt, "refresh_token_expires_at"),
    sessionId: response.sessionId,
    userId: response.userId,
  };
}

function sessionOf(session: Session): SessionInfo {
  return {
    sessionId: session.sessionId,
    createdAt: requiredDate(session.createdAt, "created_at"),
    lastActiveAt: requiredDate(session.lastActiveAt, "last_active_at"),
    idleExpiresAt: requiredDate(session.idleExpiresAt, "idle_expires_at"),
    expiresAt: requiredDate(session.expiresAt, "expires_at"),
    deviceType: session.deviceType,
    browser: session.browser,
    os: session.os,
    deviceName: session.deviceName,
    ipAddress: session.ipAddress,
    userAgent: session.userAgent,
    current: session.current,
    rememberMe: session.rememberMe,
    country: session.country,
    city: session.city,
    assuranceLevel: session.assuranceLevel,
  };
}

function pendingLoginOf(step: SecondFactorStep): PendingLogin {
  return {
    pendingLoginToken: step.pendingLoginToken,
    expiresAt: requiredDate(step.expiresAt, "second_factor.expires_at"),
    factorTypes: [...step.factorTypes],
    enrolmentRequired: step.enrolmentRequired,
  };
}

function pendingTokenOf(pending: PendingLogin | string | undefined): string {
  return pending === undefined ? "" : typeof pending === "string" ? pending : pending.pendingLoginToken;
}

function factorOf(factor: Factor | undefined): FactorInfo {
  if (factor === undefined) {
    throw new AuthsvcError({ code: Code.Internal, message: "response lacks factor", reason: "" });
  }
  return {
    factorId: factor.factorId,
    type: factor.type,
    name: factor.name,
    createdAt: requiredDate(factor.createdAt, "created_at"),
    lastUsedAt: factor.lastUsedAt && timestampDate(factor.lastUsedAt),
  };
}

function sessionRecordOf(session: Session): SessionRecord {
  return {
    ...sessionOf(session),
    endedAt: session.endedAt && timestampDate(session.endedAt),
    endReason: session.endReason,
  };
}

/** An event of the feed; undefined for a kind this client does not know (a newer server). */
function feedEventOf(response: WatchRevocationsResponse): FeedEvent | undefined {
  const { event } = response;
  switch (event.case) {
    case "revocation":
      return {
        kind: "revocation",
        cursor: event.value.cursor,
        sessionId: event.value.sessionId,
        userId: event.value.userId,
        reason: event.value.reason,
        revokedAt: requiredDate(event.value.revokedAt, "revoked_at"),
        tokensExpireBy: requiredDate(event.value.tokensExpireBy, "tokens_expire_by"),
      };
    case "heartbeat":
      return { kind: "heartbeat", cursor: event.value.cursor, sentAt: requiredDate(event.value.sentAt, "sent_at") };
  }
  return undefined;
}

/** The AuthService methods a service calls as itself, with its service key. */
const SERVICE_METHODS: ReadonlySet<string> = new Set(["WatchRevocations", "ValidateToken", "GetJwks"]);

// Header values may not hold control characters; the message never shows the key.
const HEADER_SAFE = /^[\x21-\x7e]+$/;

function serviceKeyInterceptor(serviceKey: string): Interceptor {
  if (!HEADER_SAFE.test(serviceKey)) {
    throw new TypeError("serviceKey must be a non-empty string of visible ASCII characters");
  }
  const authorization = `Bearer ${serviceKey}`;
  return (next) => async (req) => {
    if (
      req.service.typeName === AuthService.typeName &&
      SERVICE_METHODS.has(req.method.name) &&
      !req.header.has("authorization")
    ) {
      req.header.set("authorization", authorization);
    }
    return next(req);
  };
}

function userAgentInterceptor(userAgent: string): Interceptor {
  return (next) => async (req) => {
    req.header.set("user-agent", userAgent);
    return next(req);
  };
}

/**
 * The authsvc client. Register or Login signs it in; every later call that acts for the
 * user carries the access token, refreshed as needed (see TokenManager). Every method
 * throws AuthsvcError subclasses (errors.ts), never a bare ConnectError.
 */
export class AuthClient {
  /** The signed-in session's tokens and the refresh logic. */
  readonly tokens: TokenManager;
  /**
   * The generated Connect client on the same transport, token interceptor included, for
   * what the typed methods do not cover. It throws ConnectError (map with toAuthsvcError).
   */
  readonly raw: Client<typeof AuthService>;
  /** The connection close() aborts: undefined when it was given (shared, its owner's). */
  readonly #ownConnection: Http2SessionManager | undefined;

  constructor(options: AuthClientOptions) {
    const connection = options.connection ?? new Http2SessionManager(options.baseUrl);
    this.#ownConnection = options.connection === undefined ? connection : undefined;
    const refreshTimeoutMs = options.refreshTimeoutMs ?? 10_000;
    this.tokens = new TokenManager({
      // The retries of this call (the service config's) resend the same key.
      refresh: async (refreshToken, idempotencyKey) =>
        tokensOf(await this.raw.refresh({ refreshToken, idempotencyKey }, { timeoutMs: refreshTimeoutMs })),
      ...(options.refreshSkewMs !== undefined && { refreshSkewMs: options.refreshSkewMs }),
      ...(options.now !== undefined && { now: options.now }),
      ...(options.onSessionExpired !== undefined && { onSessionExpired: options.onSessionExpired }),
      ...(options.onTokens !== undefined && { onTokens: options.onTokens }),
    });
    const interceptors = [
      ...(options.userAgent !== undefined ? [userAgentInterceptor(options.userAgent)] : []),
      ...(options.interceptors ?? []),
      // Inside yours, so an interceptor of yours that logs headers never sees the key.
      ...(options.serviceKey !== undefined ? [serviceKeyInterceptor(options.serviceKey)] : []),
      authInterceptor(this.tokens),
      // Innermost, as gRPC retries below the interceptors: yours see one call, not each attempt.
      retryInterceptor(options.serviceConfig ?? SERVICE_CONFIG),
    ];
    const transport = createGrpcTransport({
      baseUrl: options.baseUrl,
      sessionManager: connection,
      interceptors,
      ...(options.timeoutMs !== undefined && { defaultTimeoutMs: options.timeoutMs }),
    });
    this.raw = createClient(AuthService, transport);
    if (options.tokens !== undefined) {
      this.tokens.setTokens(options.tokens);
    }
  }

  /**
   * Create an account and sign this client in with its first session. A server that does not
   * reveal accounts (its default) answers Register without tokens, the same for a new and a
   * taken email; this then signs in with Login, so a taken email throws InvalidCredentials
   * unless the password is its owner's. A revealing server throws EmailTaken instead. Throws
   * SecondFactorRequired, as login() does, when the account must enrol a second factor first.
   */
  async register(input: RegisterInput, options?: CallOptions): Promise<Tokens> {
    const response = await this.#call(() => this.raw.register(input, options));
    if (response.secondFactor !== undefined) {
      throw new SecondFactorRequired(pendingLoginOf(response.secondFactor));
    }
    if (response.accessToken === "") {
      const { displayName: _, ...login } = input;
      return this.login(login, options);
    }
    const tokens = tokensOf(response);
    this.tokens.setTokens(tokens);
    return tokens;
  }

  /**
   * Check the password and sign this client in with a new session.
   *
   * When the password is right and the account has a second factor (or must enrol one), no
   * session starts yet: it throws SecondFactorRequired, whose `pending` goes to
   * completeLogin() (or, when `enrolmentRequired`, to enrolTotp() and confirmTotp()). The
   * client's tokens are left as they were.
   */
  async login(input: LoginInput, options?: CallOptions): Promise<Tokens> {
    const response = await this.#call(() => this.raw.login(input, options));
    if (response.secondFactor !== undefined) {
      throw new SecondFactorRequired(pendingLoginOf(response.secondFactor));
    }
    const tokens = tokensOf(response);
    this.tokens.setTokens(tokens);
    return tokens;
  }

  /**
   * Finish a two-step login with one verification of a second factor; the new session, at
   * AAL2, becomes this client's as login()'s does. `pending` is SecondFactorRequired's, or
   * its token alone (a web app that kept it between two requests). Throws
   * SecondFactorInvalid for a wrong or reused code (throttled like a wrong password; the
   * pending login allows a few), PendingLoginInvalid when it is unknown, used, expired or
   * out of attempts: login() again.
   */
  async completeLogin(pending: PendingLogin | string, proof: FactorProof, options?: CallOptions): Promise<Tokens> {
    const response = await this.#call(() =>
      this.raw.completeLogin({ pendingLoginToken: pendingTokenOf(pending), proof: factorProofInit(proof) }, options),
    );
    const tokens = tokensOf(response);
    this.tokens.setTokens(tokens);
    return tokens;
  }

  /**
   * Verify a second factor in this session (StepUp), after a call threw StepUpRequired: the
   * session becomes AAL2 and the client swaps in the new access token that says so (same
   * session, same refresh token); sensitive calls then succeed until `stepUpExpiresAt`.
   * Throws SecondFactorInvalid for a wrong or reused code.
   */
  async stepUp(proof: FactorProof, options?: CallOptions): Promise<SteppedUp> {
    const sessionId = this.tokens.tokens?.sessionId;
    const response = await this.#call(() => this.raw.stepUp({ proof: factorProofInit(proof) }, options));
    const accessTokenExpiresAt = requiredDate(response.accessTokenExpiresAt, "access_token_expires_at");
    if (sessionId !== undefined) {
      await this.tokens.adoptAccessToken(sessionId, response.accessToken, accessTokenExpiresAt);
    }
    return {
      assuranceLevel: response.assuranceLevel,
      stepUpExpiresAt: requiredDate(response.stepUpExpiresAt, "step_up_expires_at"),
      accessTokenExpiresAt,
    };
  }

  /** The caller's confirmed second factors (never a secret), and the recovery codes left. */
  async listFactors(options?: CallOptions): Promise<FactorList> {
    const response = await this.#call(() => this.raw.listFactors({}, options));
    return {
      factors: response.factors.map(factorOf),
      recoveryCodesRemaining: response.recoveryCodesRemaining,
      secondFactorRequired: response.secondFactorRequired,
    };
  }

  /**
   * Start enrolling a TOTP app: its secret and otpauth:// URI, shown once; nothing counts
   * until confirmTotp(). In a session this needs a recent sign-in or step-up (StepUpRequired
   * otherwise); with `pending` (a login that answered `enrolmentRequired`) the pending login
   * is the credential instead. FactorAlreadyEnrolled if the user has a TOTP already.
   */
  async enrolTotp(input: EnrolTotpInput = {}, options?: CallOptions): Promise<TotpEnrolment> {
    const request = { name: input.name ?? "", pendingLoginToken: pendingTokenOf(input.pending) };
    const response = await this.#call(() => this.raw.enrolTotp(request, options));
    return {
      factorId: response.factorId,
      secret: response.secret,
      provisioningUri: response.provisioningUri,
      expiresAt: requiredDate(response.expiresAt, "expires_at"),
    };
  }

  /**
   * Confirm a TOTP enrolment with the first code the app shows. The user's other sessions
   * end (SECOND_FACTOR_CHANGED). In a session, the session becomes AAL2 and the client swaps
   * in its new access token; with `pending`, the pending login becomes a session, the
   * client's as after login(). The first factor comes with recovery codes, shown once.
   * Throws SecondFactorInvalid for a wrong code, FactorNotFound for an unknown or expired
   * enrolment.
   */
  async confirmTotp(input: ConfirmTotpInput, options?: CallOptions): Promise<TotpConfirmation> {
    const sessionId = input.pending === undefined ? this.tokens.tokens?.sessionId : undefined;
    const request = { factorId: input.factorId, code: input.code, pendingLoginToken: pendingTokenOf(input.pending) };
    const response = await this.#call(() => this.raw.confirmTotp(request, options));
    const signedIn = response.signedIn;
    let tokens: Tokens | undefined;
    if (signedIn !== undefined && signedIn.refreshToken !== "") {
      tokens = tokensOf(signedIn);
      this.tokens.setTokens(tokens);
    } else if (signedIn !== undefined && signedIn.accessToken !== "" && sessionId !== undefined) {
      const expiresAt = requiredDate(signedIn.accessTokenExpiresAt, "signed_in.access_token_expires_at");
      await this.tokens.adoptAccessToken(sessionId, signedIn.accessToken, expiresAt);
    }
    return { factor: factorOf(response.factor), recoveryCodes: [...response.recoveryCodes], tokens };
  }

  /**
   * Remove one of the caller's factors (the last one takes the recovery codes with it);
   * resolves to how many of the user's other sessions it ended. Needs a recent step-up
   * (StepUpRequired); FactorNotFound if it is not the caller's.
   */
  async removeFactor(factorId: string, options?: CallOptions): Promise<number> {
    const response = await this.#call(() => this.raw.removeFactor({ factorId }, options));
    return response.revokedSessionCount;
  }

  /**
   * Replace the caller's recovery codes with a new set, shown once; the old set stops working
   * and the user's other sessions end. Needs a recent step-up (StepUpRequired).
   */
  async regenerateRecoveryCodes(options?: CallOptions): Promise<RecoveryCodes> {
    const response = await this.#call(() => this.raw.regenerateRecoveryCodes({}, options));
    return { recoveryCodes: [...response.recoveryCodes], revokedSessionCount: response.revokedSessionCount };
  }

  /**
   * Rotate the refresh token now (normally the token manager does this by itself). Every
   * rotation carries an idempotency key (see TokenManager); pass your own (16 to 128
   * printable ASCII characters) to choose it.
   */
  async refresh(idempotencyKey?: string): Promise<Tokens> {
    return this.#call(() => this.tokens.refresh(idempotencyKey));
  }

  /**
   * Revoke this session (default), the other sessions, or all; returns how many were
   * revoked. When this session is among them, the client is signed out.
   */
  async logout(scope: LogoutScope = LogoutScope.THIS_SESSION, options?: CallOptions): Promise<number> {
    const response = await this.#call(() => this.raw.logout({ scope }, options));
    if (scope !== LogoutScope.OTHER_SESSIONS) {
      this.tokens.clear();
    }
    return response.revokedSessionCount;
  }

  /**
   * Set a new password with a reset token (an operator's AdminService.CreatePasswordResetToken,
   * delivered by your own channel); every session of the account ends, and the number ended
   * comes back. Needs no sign-in and signs nobody in: login with the new password next. This
   * client's tokens are kept (the answer does not say whose account it reset). Throws
   * PasswordResetTokenInvalid for an unknown, used or expired token alike, WeakPassword if the
   * new password breaks the policy (the token stays good), RateLimited after too many invalid
   * tokens from one address.
   */
  async resetPassword(input: ResetPasswordInput, options?: CallOptions): Promise<number> {
    const response = await this.#call(() => this.raw.resetPassword(input, options));
    return response.revokedSessionCount;
  }

  /** One page of the caller's live sessions, most recent activity first. */
  async listSessions(input: ListSessionsInput = {}, options?: CallOptions): Promise<SessionPage> {
    const response = await this.#call(() => this.raw.listSessions(input, options));
    return { sessions: response.sessions.map(sessionOf), nextPageToken: response.nextPageToken };
  }

  /** Every live session of the caller, page by page (`pageSize` per RPC). */
  async *iterSessions(pageSize = 0, options?: CallOptions): AsyncGenerator<SessionInfo, void, undefined> {
    let pageToken = "";
    do {
      const page = await this.listSessions({ pageSize, pageToken }, options);
      yield* page.sessions;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  /**
   * One of the caller's sessions, live or ended (while the server keeps ended ones): its
   * device, its idle deadline, and for an ended one why and when it ended. Another user's
   * session and an unknown id both throw SessionNotFound.
   */
  async getSession(sessionId: string, options?: CallOptions): Promise<SessionRecord> {
    const response = await this.#call(() => this.raw.getSession({ sessionId }, options));
    if (response.session === undefined) {
      throw new AuthsvcError({ code: Code.Internal, message: "response lacks session", reason: "" });
    }
    return sessionRecordOf(response.session);
  }

  /** Revoke one of the caller's sessions; revoking a revoked session succeeds. */
  async revokeSession(sessionId: string, reason = "", options?: CallOptions): Promise<void> {
    await this.#call(() => this.raw.revokeSession({ sessionId, reason }, options));
  }

  /**
   * Replace the caller's password, given the current one; resolves to how many of the user's
   * other sessions it ended. This session stays signed in with its tokens. A wrong current
   * password throws InvalidCredentials and counts as a failed login (RateLimited after too
   * many); a new password the policy refuses throws WeakPassword, with nothing changed.
   */
  async changePassword(input: ChangePasswordInput, options?: CallOptions): Promise<number> {
    const response = await this.#call(() => this.raw.changePassword(input, options));
    return response.revokedSessionCount;
  }

  /** Ask the server whether an access token is trustworthy now (an inactive token is not an error). */
  async validateToken(accessToken: string, options?: CallOptions): Promise<TokenValidation> {
    const response = await this.#call(() => this.raw.validateToken({ accessToken }, options));
    return {
      active: response.active,
      inactiveReason: response.inactiveReason,
      userId: response.userId,
      sessionId: response.sessionId,
      expiresAt: response.expiresAt && timestampDate(response.expiresAt),
      issuedAt: response.issuedAt && timestampDate(response.issuedAt),
      claims: response.claims ?? {},
      endReason: response.endReason,
      endedAt: response.endedAt && timestampDate(response.endedAt),
      assuranceLevel: response.assuranceLevel,
      amr: [...response.amr],
    };
  }

  /** The public keys that verify access tokens offline (pick by the token's `kid`). */
  async getJwks(options?: CallOptions): Promise<Jwks> {
    const response = await this.#call(() => this.raw.getJwks({}, options));
    return JSON.parse(response.jwksJson) as Jwks;
  }

  /**
   * The revocation feed: every session ended after `afterCursor` (0: a snapshot of those
   * whose tokens may still be unexpired), then live, with heartbeats. Needs `serviceKey`
   * (or a client certificate the server allows). Ends only with an error (Unavailable,
   * CURSOR_EXPIRED, SUBSCRIBER_TOO_SLOW, ...), or when you stop iterating or abort
   * `options.signal`. The client's `timeoutMs` does not apply; pass one to want a deadline.
   * TokenVerifier's `revocations` option does the resuming for you.
   */
  async *watchRevocations(
    afterCursor: bigint = 0n,
    options?: CallOptions,
  ): AsyncGenerator<FeedEvent, void, undefined> {
    // timeoutMs 0 is no deadline for a stream: it is meant to stay open.
    const stream = this.raw.watchRevocations({ afterCursor }, { timeoutMs: 0, ...options });
    try {
      for await (const response of stream) {
        const event = feedEventOf(response);
        if (event !== undefined) {
          yield event;
        }
      }
    } catch (error) {
      throw toAuthsvcError(error);
    }
  }

  /**
   * Close the HTTP/2 connection: in-flight calls fail; the client is not usable after. A
   * shared connection (the `connection` option) stays open for its other clients.
   */
  close(): void {
    this.#ownConnection?.abort();
  }

  async #call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      throw toAuthsvcError(error);
    }
  }
}
