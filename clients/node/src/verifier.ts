// TokenVerifier: trust an authsvc access token without a round trip, by the same rules as
// the server and the Python client's TokenVerifier (clients/testdata/access_token_claims.json
// is the table of cases all three are tested against). Signatures, key sets and the standard
// claims are checked by `jose`; this file adds authsvc's own rules and the messages.

import { Code } from "@connectrpc/connect";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as jose,
  jwtVerify,
  type JSONWebKeySet,
  type JWK,
  type JWTVerifyGetKey,
} from "jose";
import type { Jwks, TokenValidation } from "./client.js";
import {
  AuthsvcError,
  DOMAIN,
  errorFor,
  RevocationFeedStale,
  StepUpRequired,
  TokenExpired,
  TokenInvalid,
  Unauthenticated,
  Unavailable,
} from "./errors.js";
import { ErrorReason } from "./gen/authsvc/v1/error_reason_pb.js";
import { AssuranceLevel } from "./gen/authsvc/v1/second_factors_pb.js";
import { RevocationFeed, type FeedSource, type RevocationFeedOptions } from "./revocations.js";
import { assuranceLevelOf } from "./second_factors.js";

/** The server's default AUTHSVC_CLOCK_SKEW, so server and verifier refuse the same tokens. */
export const DEFAULT_LEEWAY_MS = 30_000;
/** Unknown `kid`s refetch the JWKS at most this often, because forged tokens carry them too. */
export const DEFAULT_JWKS_REFETCH_INTERVAL_MS = 10_000;

const REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp"];
// The algorithms authsvc signs with; a key is used only with the one it declares.
const ALGORITHMS = ["EdDSA", "ES256"];
// RFC 9068 section 4: resource servers must check the type, so an ID token is not accepted.
// jose compares it case-insensitively, with or without "application/".
const ACCESS_TOKEN_TYPE = "at+jwt";
// Far above any token authsvc mints; bounds the work a hostile string can cause.
const MAX_TOKEN_LENGTH = 8192;
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Where the keys come from: an AuthClient (GetJwks). */
export interface JwksSource {
  getJwks(): Promise<Jwks>;
}

/**
 * What a subscribed verifier needs besides the keys: the feed (WatchRevocations) and the
 * online check it falls back to when the feed is stale (ValidateToken). An AuthClient.
 */
export interface RevocationSource extends JwksSource, FeedSource {
  validateToken(accessToken: string): Promise<TokenValidation>;
}

/** What a subscribed verifier does while its deny-list is stale (see RevocationOptions). */
export type WhenStale = "validate" | "refuse";

export interface RevocationOptions extends RevocationFeedOptions {
  /**
   * While the feed is stale (no heartbeat for `staleAfterMs`, or none yet): "validate" asks
   * the server (ValidateToken, one RPC per verify), "refuse" throws RevocationFeedStale.
   * Either way a revoked session is never accepted. Default "validate".
   */
  whenStale?: WhenStale;
}

export interface TokenVerifierOptions {
  /** The `iss` to require; "authsvc" by default (AUTHSVC_ISSUER). */
  issuer?: string;
  /** The `aud` to require; "authsvc" by default (AUTHSVC_AUDIENCE). */
  audience?: string;
  /** The verifier's clock for token times and deny-list expiry. */
  now?: () => Date;
  /** Allowance for clock skew on `exp`, `nbf` and `iat`; the server's 30 s by default. */
  leewayMs?: number;
  jwksRefetchIntervalMs?: number;
  /**
   * Take the keys from this JWKS URL (the server's `/.well-known/jwks.json`) instead of
   * GetJwks. Cached, and refetched for an unknown `kid` at most once per
   * `jwksRefetchIntervalMs`.
   */
  jwksUrl?: URL | string;
  /**
   * Subscribe to WatchRevocations and refuse tokens of ended sessions (SessionRevoked). The
   * source must then be an AuthClient (or any RevocationSource). Call close() when done.
   */
  revocations?: RevocationOptions;
  /**
   * Refuse tokens below this level with StepUpRequired (PERMISSION_DENIED, reason
   * STEP_UP_REQUIRED, no factor types), as authsvc refuses its own sensitive calls; verify()
   * can override it per call. Default: no minimum.
   */
  minAssurance?: AssuranceLevel;
}

/** Per-call options of verify(). */
export interface VerifyOptions {
  /** Overrides the verifier's minAssurance for this call: AssuranceLevel.AAL2 for a sensitive one. */
  minAssurance?: AssuranceLevel;
}

/** Who a verified access token speaks for. */
export interface Principal {
  userId: string;
  sessionId: string;
  expiresAt: Date;
  claims: Readonly<Record<string, unknown>>;
  /**
   * The token's `acr` as a level: AAL2 when the session verified a second factor (or began
   * with a passkey), AAL1 for a password alone (and a token without `acr`, minted before
   * levels), UNSPECIFIED for a value this client does not know.
   */
  assuranceLevel: AssuranceLevel;
  /** The token's `amr` (RFC 8176), e.g. ["pwd", "otp", "mfa"]; empty without one. */
  amr: string[];
}

// Messages say why, in the Python verifier's words (the shared claims table checks both).
function invalid(message: string): TokenInvalid {
  const reason = ErrorReason[ErrorReason.TOKEN_INVALID];
  return new TokenInvalid({ code: Code.Unauthenticated, message, reason, domain: DOMAIN });
}

function malformed(name: string): TokenInvalid {
  return invalid(`access token has a malformed ${name} claim`);
}

/** A token of an ended session, or one ValidateToken calls inactive, in the Python client's words. */
function inactive(reason: string): AuthsvcError {
  const message = `access token is not active (${reason})`;
  const error = errorFor(Code.Unauthenticated, reason, message);
  // A reason newer than this client: still a token not to trust.
  return error.constructor === Unauthenticated
    ? new TokenInvalid({ code: Code.Unauthenticated, message, reason, domain: DOMAIN })
    : error;
}

const UNKNOWN_KEY = "access token is signed by an unknown key";
const BAD_SIGNATURE = "access token signature is invalid";

/** A jose refusal as the client's error, in the shared table's words. */
function refusal(error: unknown): AuthsvcError {
  if (error instanceof AuthsvcError) {
    return error;
  }
  if (error instanceof jose.JWTExpired) {
    const reason = ErrorReason[ErrorReason.TOKEN_EXPIRED];
    return new TokenExpired({ code: Code.Unauthenticated, message: "access token has expired", reason, domain: DOMAIN });
  }
  if (error instanceof jose.JWTClaimValidationFailed) {
    if (error.claim === "typ") {
      return invalid("not an access token (typ must be at+jwt)");
    }
    if (error.reason === "missing") {
      return invalid(`access token lacks the ${error.claim} claim`);
    }
    if (error.reason === "invalid") {
      return malformed(error.claim);
    }
    switch (error.claim) {
      case "iss":
        return invalid("access token is from another issuer");
      case "aud":
        return invalid("access token is for another audience");
      case "nbf":
        return invalid("access token is not valid yet");
    }
    return invalid("access token is invalid");
  }
  if (
    error instanceof jose.JWSSignatureVerificationFailed ||
    error instanceof jose.JOSEAlgNotAllowed ||
    error instanceof jose.JOSENotSupported ||
    error instanceof jose.JWKSNoMatchingKey ||
    error instanceof jose.JWKSMultipleMatchingKeys
  ) {
    return invalid(BAD_SIGNATURE);
  }
  if (error instanceof jose.JWSInvalid || error instanceof jose.JWTInvalid) {
    return invalid("access token is malformed");
  }
  return invalid("access token is invalid");
}

/** The signing keys of a GetJwks answer this verifier can use; others are skipped, not fatal. */
function usableKeys(jwks: Jwks): JWK[] {
  return (jwks.keys ?? []).filter(
    (entry) =>
      typeof entry?.kid === "string" &&
      (entry.use ?? "sig") === "sig" &&
      typeof entry.alg === "string" &&
      ALGORITHMS.includes(entry.alg),
  ) as JWK[];
}

/** The key set of the last GetJwks answer, refetched (throttled) for a `kid` it lacks. */
class FetchedKeys {
  readonly #source: JwksSource;
  readonly #now: () => Date;
  readonly #refetchIntervalMs: number;
  #kids = new Set<string>();
  #keySet: JWTVerifyGetKey | undefined;
  #fetching: Promise<void> | undefined;
  #lastRefetchMs: number | undefined;

  constructor(source: JwksSource, now: () => Date, refetchIntervalMs: number) {
    this.#source = source;
    this.#now = now;
    this.#refetchIntervalMs = refetchIntervalMs;
  }

  /** For jwtVerify: the key of the token's `kid`; an unknown one is TokenInvalid. */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const kid = header.kid;
    if (typeof kid !== "string") {
      throw invalid(UNKNOWN_KEY);
    }
    if (this.#keySet === undefined || (!this.#kids.has(kid) && this.#mayRefetch())) {
      await this.#fetch();
    }
    if (!this.#kids.has(kid) || this.#keySet === undefined) {
      throw invalid(UNKNOWN_KEY);
    }
    // jose picks the key by kid, and only for the algorithm the key declares.
    return this.#keySet(header, token);
  };

  #mayRefetch(): boolean {
    const nowMs = this.#now().getTime();
    if (this.#lastRefetchMs !== undefined && nowMs - this.#lastRefetchMs < this.#refetchIntervalMs) {
      return false;
    }
    this.#lastRefetchMs = nowMs;
    return true;
  }

  // One fetch at a time: concurrent calls with an unknown kid share it.
  #fetch(): Promise<void> {
    this.#fetching ??= this.#source
      .getJwks()
      .then((jwks) => {
        const keys = usableKeys(jwks);
        this.#keySet = createLocalJWKSet({ keys } satisfies JSONWebKeySet);
        this.#kids = new Set(keys.map((key) => key.kid as string));
      })
      .finally(() => {
        this.#fetching = undefined;
      });
    return this.#fetching;
  }
}

/** The key set at a JWKS URL; a failed fetch is Unavailable, an unknown `kid` TokenInvalid. */
function remoteKeys(url: URL, refetchIntervalMs: number): JWTVerifyGetKey {
  const keySet = createRemoteJWKSet(url, { cooldownDuration: refetchIntervalMs });
  return async (header, token) => {
    try {
      return await keySet(header, token);
    } catch (error) {
      if (error instanceof jose.JWKSNoMatchingKey) {
        throw invalid(UNKNOWN_KEY);
      }
      const fetchFailed =
        !(error instanceof jose.JOSEError) ||
        error instanceof jose.JWKSTimeout ||
        error instanceof jose.JWKSInvalid ||
        error.code === jose.JOSEError.code;
      if (!fetchFailed) {
        throw error;
      }
      throw new Unavailable({ code: Code.Unavailable, message: `cannot fetch the JWKS at ${url.href}`, reason: "", cause: error });
    }
  };
}

/** The deny-list's key for a session id: the same UUID however it is spelled. */
function sessionKey(sessionId: string): string {
  return sessionId.replaceAll("-", "").toLowerCase();
}

/**
 * Verifies authsvc access tokens offline, for an internal service.
 *
 * Checks, with `jose`: the signature against the service's JWKS (GetJwks, fetched once and
 * cached, or `jwksUrl`), with only the algorithm the key itself declares; the JWT type
 * `at+jwt`; the required claims; `iss` and `aud`; `nbf` (when present) still ahead and `exp`
 * passed, by `now` with `leewayMs`. Then authsvc's own: `iat` still ahead is TOKEN_INVALID
 * too, and `sub` and `sid` must be UUIDs. A token whose `kid` is not cached refetches the
 * JWKS (a key rotation), at most once per `jwksRefetchIntervalMs`.
 *
 * Offline verification alone cannot see a revoked session: its tokens pass until they
 * expire. With `revocations`, the verifier subscribes to WatchRevocations and keeps a
 * deny-list of ended sessions: their tokens throw SessionRevoked. While the feed is stale it
 * fails closed, asking the server or refusing (`whenStale`). close() ends the subscription.
 *
 * Throws TokenInvalid, whose message says why (the Python verifier's words), TokenExpired,
 * SessionRevoked, RevocationFeedStale, or SessionExpired from the online check; a failure to
 * fetch the keys or reach the server throws the client's error (Unavailable).
 */
export class TokenVerifier {
  readonly #issuer: string;
  readonly #audience: string;
  readonly #now: () => Date;
  readonly #leewayMs: number;
  readonly #getKey: JWTVerifyGetKey;
  readonly #feed: RevocationFeed | undefined;
  readonly #online: RevocationSource | undefined;
  readonly #minAssurance: AssuranceLevel | undefined;

  constructor(source: JwksSource | RevocationSource, options: TokenVerifierOptions = {}) {
    this.#minAssurance = options.minAssurance;
    const leewayMs = options.leewayMs ?? DEFAULT_LEEWAY_MS;
    if (!Number.isFinite(leewayMs) || leewayMs < 0) {
      throw new RangeError(`leewayMs must be a non-negative number, got ${leewayMs}`);
    }
    this.#issuer = options.issuer ?? "authsvc";
    this.#audience = options.audience ?? "authsvc";
    this.#now = options.now ?? (() => new Date());
    this.#leewayMs = leewayMs;
    const refetchIntervalMs = options.jwksRefetchIntervalMs ?? DEFAULT_JWKS_REFETCH_INTERVAL_MS;
    this.#getKey =
      options.jwksUrl !== undefined
        ? remoteKeys(new URL(options.jwksUrl), refetchIntervalMs)
        : new FetchedKeys(source, this.#now, refetchIntervalMs).getKey;
    const revocations = options.revocations;
    if (revocations !== undefined) {
      if (!isRevocationSource(source)) {
        throw new TypeError("revocations needs a source with watchRevocations and validateToken (an AuthClient)");
      }
      if (revocations.whenStale !== undefined && !["validate", "refuse"].includes(revocations.whenStale)) {
        throw new RangeError(`whenStale must be "validate" or "refuse", got ${String(revocations.whenStale)}`);
      }
      this.#online = revocations.whenStale === "refuse" ? undefined : source;
      this.#feed = new RevocationFeed(source, {
        ...revocations,
        now: this.#now,
        // A denied session's tokens pass the offline checks until `exp` + leeway.
        keepAfterExpiryMs: leewayMs,
        sessionKey,
      });
    }
  }

  /**
   * Whether the deny-list may be trusted now: a caught-up feed spoke within `staleAfterMs`.
   * False before the first heartbeat, and always for a verifier without `revocations`.
   */
  get isFeedCurrent(): boolean {
    return this.#feed?.current ?? false;
  }

  /**
   * The principal `accessToken` speaks for; throws if it must not be trusted. The level
   * (`minAssurance`) is checked after everything else, so StepUpRequired means "a good
   * token, but not strong enough".
   */
  async verify(accessToken: string, options: VerifyOptions = {}): Promise<Principal> {
    const principal = await this.#verifyTrusted(accessToken);
    const required = options.minAssurance ?? this.#minAssurance;
    if (required !== undefined && principal.assuranceLevel < required) {
      throw new StepUpRequired({
        code: Code.PermissionDenied,
        message: `access token is below assurance level ${AssuranceLevel[required]?.toLowerCase() ?? required}`,
        reason: ErrorReason[ErrorReason.STEP_UP_REQUIRED],
        domain: DOMAIN,
      });
    }
    return principal;
  }

  async #verifyTrusted(accessToken: string): Promise<Principal> {
    const principal = await this.#verifyOffline(accessToken);
    const feed = this.#feed;
    if (feed === undefined) {
      return principal;
    }
    // An ended session never comes back, so the deny-list is right even when stale.
    if (feed.isRevoked(principal.sessionId)) {
      throw inactive(ErrorReason[ErrorReason.SESSION_REVOKED]);
    }
    if (feed.current) {
      return principal;
    }
    if (this.#online === undefined) {
      throw new RevocationFeedStale({
        code: Code.Unavailable,
        message: "the revocation feed is stale; no token is trusted until it is current",
        reason: "",
      });
    }
    const answer = await this.#online.validateToken(accessToken);
    if (!answer.active) {
      throw inactive(answer.inactiveReason || ErrorReason[ErrorReason.TOKEN_INVALID]);
    }
    return principal;
  }

  /** Ends the revocation subscription, if any: its stream and timers. The source stays open. */
  async close(): Promise<void> {
    await this.#feed?.close();
  }

  async #verifyOffline(accessToken: string): Promise<Principal> {
    if (accessToken.length > MAX_TOKEN_LENGTH) {
      throw invalid("access token is too long");
    }
    const now = this.#now();
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(accessToken, this.#getKey, {
        algorithms: ALGORITHMS,
        typ: ACCESS_TOKEN_TYPE,
        requiredClaims: REQUIRED_CLAIMS,
        issuer: this.#issuer,
        audience: this.#audience,
        currentDate: now,
        clockTolerance: this.#leewayMs / 1000,
      }));
    } catch (error) {
      throw refusal(error);
    }
    return this.#checkOwnClaims(claims, now);
  }

  // What jose does not check: ids are UUIDs, every audience a string, and (as the server
  // does) a token is not valid before its `iat` either.
  #checkOwnClaims(claims: Record<string, unknown>, now: Date): Principal {
    for (const name of REQUIRED_CLAIMS) {
      if (claims[name] === null) {
        throw invalid(`access token lacks the ${name} claim`);
      }
    }
    const audience = claims["aud"];
    if (Array.isArray(audience) && !audience.every((value) => typeof value === "string")) {
      throw invalid("access token is for another audience");
    }
    const { sub, sid, iat, exp } = claims;
    if (typeof sub !== "string" || !UUID.test(sub)) {
      throw malformed("sub");
    }
    if (typeof sid !== "string" || !UUID.test(sid)) {
      throw malformed("sid");
    }
    // jose has checked both are numbers; whole seconds, as the server reads them.
    if (now.getTime() < Math.trunc(iat as number) * 1000 - this.#leewayMs) {
      throw invalid("access token is not valid yet");
    }
    const amr = Array.isArray(claims["amr"])
      ? claims["amr"].filter((method): method is string => typeof method === "string")
      : [];
    return {
      userId: sub,
      sessionId: sid,
      expiresAt: new Date(Math.trunc(exp as number) * 1000),
      claims,
      assuranceLevel: assuranceLevelOf(claims["acr"]),
      amr,
    };
  }
}

function isRevocationSource(source: JwksSource | RevocationSource): source is RevocationSource {
  const candidate = source as Partial<RevocationSource>;
  return typeof candidate.watchRevocations === "function" && typeof candidate.validateToken === "function";
}
