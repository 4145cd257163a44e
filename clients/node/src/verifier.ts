// TokenVerifier: trust an authsvc access token without a round trip, by the same rules as
// the server and the Python client's TokenVerifier (clients/testdata/access_token_claims.json
// is the table of cases all three are tested against).

import { createPublicKey, verify as verifySignature, type KeyObject } from "node:crypto";
import { Code } from "@connectrpc/connect";
import type { Jwk, Jwks } from "./client.js";
import { DOMAIN, TokenExpired, TokenInvalid } from "./errors.js";
import { ErrorReason } from "./gen/authsvc/v1/error_reason_pb.js";

/** The server's default AUTHSVC_CLOCK_SKEW, so server and verifier refuse the same tokens. */
export const DEFAULT_LEEWAY_MS = 30_000;
/** Unknown `kid`s refetch the JWKS at most this often, because forged tokens carry them too. */
export const DEFAULT_JWKS_REFETCH_INTERVAL_MS = 10_000;

const REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp"] as const;
// RFC 9068 section 4: resource servers must check the type, so an ID token is not accepted.
const ACCESS_TOKEN_TYPES = new Set(["at+jwt", "application/at+jwt"]);
// Far above any token authsvc mints; bounds the work a hostile string can cause.
const MAX_TOKEN_LENGTH = 8192;
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Where the keys come from: an AuthClient (GetJwks). */
export interface JwksSource {
  getJwks(): Promise<Jwks>;
}

export interface TokenVerifierOptions {
  /** The `iss` to require; "authsvc" by default (AUTHSVC_ISSUER). */
  issuer?: string;
  /** The `aud` to require; "authsvc" by default (AUTHSVC_AUDIENCE). */
  audience?: string;
  /** The verifier's clock. */
  now?: () => Date;
  /** Allowance for clock skew on `exp`, `nbf` and `iat`; the server's 30 s by default. */
  leewayMs?: number;
  jwksRefetchIntervalMs?: number;
}

/** Who a verified access token speaks for. */
export interface Principal {
  userId: string;
  sessionId: string;
  expiresAt: Date;
  claims: Readonly<Record<string, unknown>>;
}

interface VerificationKey {
  algorithm: "EdDSA" | "ES256";
  key: KeyObject;
}

// Messages say why, in the Python verifier's words (the shared claims table checks both).
function invalid(message: string): TokenInvalid {
  const reason = ErrorReason[ErrorReason.TOKEN_INVALID];
  return new TokenInvalid({ code: Code.Unauthenticated, message, reason, domain: DOMAIN });
}

function malformed(name: string): TokenInvalid {
  return invalid(`access token has a malformed ${name} claim`);
}

function decodeJson(part: string): Record<string, unknown> {
  const value: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError("not a JSON object");
  }
  return value as Record<string, unknown>;
}

/** A NumericDate claim (RFC 7519: a JSON number of seconds) in ms, whole seconds as the server reads it. */
function numericDate(claims: Record<string, unknown>, name: string): number {
  const value = claims[name];
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw malformed(name);
  }
  return Math.trunc(value) * 1000;
}

function parseKeySet(jwks: Jwks): Map<string, VerificationKey> {
  const keys = new Map<string, VerificationKey>();
  for (const entry of jwks.keys ?? []) {
    if (typeof entry?.kid !== "string" || (entry.use ?? "sig") !== "sig") {
      continue;
    }
    if (entry.alg !== "EdDSA" && entry.alg !== "ES256") {
      continue; // A key this verifier cannot use is skipped, not fatal.
    }
    try {
      keys.set(entry.kid, { algorithm: entry.alg, key: createPublicKey({ key: jwkOf(entry), format: "jwk" }) });
    } catch {
      continue;
    }
  }
  return keys;
}

function jwkOf(entry: Jwk): { [member: string]: string } {
  const jwk: { [member: string]: string } = {};
  for (const [name, value] of Object.entries(entry)) {
    if (typeof value === "string") {
      jwk[name] = value;
    }
  }
  return jwk;
}

/**
 * Verifies authsvc access tokens offline, for an internal service.
 *
 * Checks, in the server's order: the JWT type `at+jwt`; the signature against the service's
 * JWKS (fetched once with GetJwks and cached), with only the algorithm the key itself
 * declares; the required claims; `iss` and `aud`; then the times by `now`, each with
 * `leewayMs`: TOKEN_INVALID while `nbf` (when present) or `iat` is still ahead, TOKEN_EXPIRED
 * from `exp`. A token whose `kid` is not cached refetches the JWKS (a key rotation), at most
 * once per `jwksRefetchIntervalMs`. Offline verification cannot see a revoked session: its
 * tokens pass until they expire; ask `AuthClient.validateToken` when that matters.
 *
 * Throws TokenInvalid, whose message says why (the Python verifier's words), or TokenExpired;
 * a failure to fetch the keys throws the client's error.
 */
export class TokenVerifier {
  readonly #source: JwksSource;
  readonly #issuer: string;
  readonly #audience: string;
  readonly #now: () => Date;
  readonly #leewayMs: number;
  readonly #refetchIntervalMs: number;
  #keys: Map<string, VerificationKey> | undefined;
  #fetching: Promise<Map<string, VerificationKey>> | undefined;
  #lastRefetchMs: number | undefined;

  constructor(source: JwksSource, options: TokenVerifierOptions = {}) {
    const leewayMs = options.leewayMs ?? DEFAULT_LEEWAY_MS;
    if (!Number.isFinite(leewayMs) || leewayMs < 0) {
      throw new RangeError(`leewayMs must be a non-negative number, got ${leewayMs}`);
    }
    this.#source = source;
    this.#issuer = options.issuer ?? "authsvc";
    this.#audience = options.audience ?? "authsvc";
    this.#now = options.now ?? (() => new Date());
    this.#leewayMs = leewayMs;
    this.#refetchIntervalMs = options.jwksRefetchIntervalMs ?? DEFAULT_JWKS_REFETCH_INTERVAL_MS;
  }

  /** The principal `accessToken` speaks for; throws if it must not be trusted. */
  async verify(accessToken: string): Promise<Principal> {
    if (accessToken.length > MAX_TOKEN_LENGTH) {
      throw invalid("access token is too long");
    }
    const parts = accessToken.split(".");
    if (parts.length !== 3) {
      throw invalid("access token is malformed");
    }
    const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
    let header: Record<string, unknown>;
    let claims: Record<string, unknown>;
    try {
      header = decodeJson(headerPart);
      claims = decodeJson(payloadPart);
    } catch {
      throw invalid("access token is malformed");
    }
    if (!ACCESS_TOKEN_TYPES.has(String(header["typ"] ?? "").toLowerCase())) {
      throw invalid("not an access token (typ must be at+jwt)");
    }
    const kid = header["kid"];
    const key = typeof kid === "string" ? await this.#key(kid) : undefined;
    if (key === undefined) {
      throw invalid("access token is signed by an unknown key");
    }
    if (header["alg"] !== key.algorithm || !this.#signatureHolds(key, `${headerPart}.${payloadPart}`, signaturePart)) {
      throw invalid("access token signature is invalid");
    }
    return this.#checkClaims(claims);
  }

  #signatureHolds(key: VerificationKey, signingInput: string, signature: string): boolean {
    const data = Buffer.from(signingInput, "ascii");
    const bytes = Buffer.from(signature, "base64url");
    if (key.algorithm === "EdDSA") {
      return verifySignature(null, data, key.key, bytes);
    }
    return verifySignature("sha256", data, { key: key.key, dsaEncoding: "ieee-p1363" }, bytes);
  }

  #checkClaims(claims: Record<string, unknown>): Principal {
    for (const name of REQUIRED_CLAIMS) {
      if (claims[name] === undefined || claims[name] === null) {
        throw invalid(`access token lacks the ${name} claim`);
      }
    }
    const audience = claims["aud"];
    const audiences = Array.isArray(audience) ? audience : [audience];
    if (!audiences.every((value) => typeof value === "string") || !audiences.includes(this.#audience)) {
      throw invalid("access token is for another audience");
    }
    if (claims["iss"] !== this.#issuer) {
      throw invalid("access token is from another issuer");
    }
    const { sub, sid } = claims;
    if (typeof sub !== "string" || !UUID.test(sub)) {
      throw malformed("sub");
    }
    if (typeof sid !== "string" || !UUID.test(sid)) {
      throw malformed("sid");
    }
    const expiresMs = numericDate(claims, "exp");
    // Valid from its issue, or from `nbf` when that is later (as the server checks).
    let notBeforeMs = numericDate(claims, "iat");
    if (claims["nbf"] !== undefined) {
      notBeforeMs = Math.max(notBeforeMs, numericDate(claims, "nbf"));
    }
    const nowMs = this.#now().getTime();
    if (nowMs < notBeforeMs - this.#leewayMs) {
      throw invalid("access token is not valid yet");
    }
    if (nowMs >= expiresMs + this.#leewayMs) {
      throw new TokenExpired({
        code: Code.Unauthenticated,
        message: "access token has expired",
        reason: ErrorReason[ErrorReason.TOKEN_EXPIRED],
        domain: DOMAIN,
      });
    }
    return { userId: sub, sessionId: sid, expiresAt: new Date(expiresMs), claims };
  }

  async #key(kid: string): Promise<VerificationKey | undefined> {
    const cached = this.#keys?.get(kid);
    if (cached !== undefined) {
      return cached;
    }
    if (this.#keys !== undefined && !this.#mayRefetch()) {
      return undefined;
    }
    return (await this.#fetch()).get(kid);
  }

  #mayRefetch(): boolean {
    const nowMs = this.#now().getTime();
    if (this.#lastRefetchMs !== undefined && nowMs - this.#lastRefetchMs < this.#refetchIntervalMs) {
      return false;
    }
    this.#lastRefetchMs = nowMs;
    return true;
  }

  // One fetch at a time: concurrent calls with an unknown kid share it.
  #fetch(): Promise<Map<string, VerificationKey>> {
    this.#fetching ??= this.#source
      .getJwks()
      .then((jwks) => {
        this.#keys = parseKeySet(jwks);
        return this.#keys;
      })
      .finally(() => {
        this.#fetching = undefined;
      });
    return this.#fetching;
  }
}
