// The token manager: holds one session's token pair and hands out an access token that is
// good to send. Same rules as the Python client's TokenManager:
//
// - Proactive: an access token within `refreshSkewMs` of its expiry (by the injectable
//   `now()`) is refreshed before it is sent.
// - Reactive: a call the server rejects with TOKEN_EXPIRED (the clocks disagree, or the
//   process slept) gets renew(): a refresh, unless another call has refreshed since, and
//   the call is retried once (the interceptor does that).
// - Single flight: however many calls need a refresh of the same tokens at once, one Refresh
//   RPC runs and they all share its outcome, success or failure. A caller whose tokens were
//   replaced (setTokens) meanwhile starts its own: the old refresh answers only for the old.
// - Terminal: when a refresh fails because the session is over (SessionExpired: revoked,
//   expired, refresh token reused, expired or invalid), or a call says so, the tokens are
//   dropped, onSessionExpired runs once and every waiting call gets that SessionExpired;
//   later calls get it too without touching the network, until setTokens() (sign in again).
//   Transient failures (UNAVAILABLE, deadlines, network) fail only the calls waiting on
//   them and leave the tokens in place.
// - Exactly once: each rotation sends an idempotency key, a fresh UUID, and the refresh
//   that retries a rotation which failed without an answer sends the same key, so a
//   rotation the server made but whose answer was lost is answered again with the same
//   successor rather than taken for a replayed token.
// - Step-up: a new access token of the same session (StepUp, or an enrolment made in a
//   session) replaces the access token only (adoptAccessToken); the refresh token, and a
//   rotation of it in flight, are left as they are.
// - Not its business: STEP_UP_REQUIRED (and every refusal but TOKEN_EXPIRED and a session's
//   end) goes to the caller as thrown, with no refresh and no retry: a new token of the same
//   session would be refused the same way.

import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { InvalidArgument, MissingCredentials, SessionExpired, toAuthsvcError } from "./errors.js";
import { ErrorReason } from "./gen/authsvc/v1/error_reason_pb.js";

/** One session's credentials, as Register, Login and Refresh return them. */
export interface Tokens {
  accessToken: string;
  accessTokenExpiresAt: Date;
  /** Sensitive: store it like a password. Rotated by every refresh. */
  refreshToken: string;
  refreshTokenExpiresAt: Date;
  sessionId: string;
  userId: string;
}

/**
 * Performs the Refresh RPC: consumes `refreshToken`, sending `idempotencyKey` with it,
 * and returns its successor pair.
 */
export type RefreshFn = (refreshToken: string, idempotencyKey: string) => Promise<Tokens>;

export interface TokenManagerOptions {
  /** The Refresh RPC, nothing else. It may throw ConnectError or AuthsvcError. */
  refresh: RefreshFn;
  /** Refresh this long before the access token expires. Default 60 000 (60 s). */
  refreshSkewMs?: number;
  /** The clock deciding when to refresh proactively. Default: `() => new Date()`. */
  now?: () => Date;
  /** Told once when the session ends (see SessionExpired). Should not throw. */
  onSessionExpired?: (error: SessionExpired) => void;
  /** Told every new pair (sign-in and each refresh): persist the refresh token here. */
  onTokens?: (tokens: Tokens) => void;
}

export const DEFAULT_REFRESH_SKEW_MS = 60_000;

export class TokenManager {
  readonly #refresh: RefreshFn;
  readonly #skewMs: number;
  readonly #now: () => Date;
  readonly #onSessionExpired: ((error: SessionExpired) => void) | undefined;
  readonly #onTokens: ((tokens: Tokens) => void) | undefined;

  #tokens: Tokens | undefined;
  /** now() when #tokens arrived: the token's lifetime as this client saw it starts there. */
  #receivedAtMs = 0;
  /** The refresh in flight, and the pair it rotates. */
  #flight: { from: Tokens; result: Promise<Tokens> } | undefined;
  /** Why the session ended; thrown to every call until setTokens(). */
  #ended: SessionExpired | undefined;
  /** The key of the rotation of this pair that has not been answered yet. */
  #pendingKey: { from: Tokens; key: string } | undefined;

  constructor(options: TokenManagerOptions) {
    const skew = options.refreshSkewMs ?? DEFAULT_REFRESH_SKEW_MS;
    if (!Number.isFinite(skew) || skew < 0) {
      throw new RangeError(`refreshSkewMs must be a non-negative number, got ${skew}`);
    }
    this.#refresh = options.refresh;
    this.#skewMs = skew;
    this.#now = options.now ?? (() => new Date());
    this.#onSessionExpired = options.onSessionExpired;
    this.#onTokens = options.onTokens;
  }

  /** The current pair; undefined when not signed in or after the session ended. */
  get tokens(): Tokens | undefined {
    return this.#tokens;
  }

  /** Adopt a new session's pair (after Login or Register, or one restored from storage). */
  setTokens(tokens: Tokens): void {
    this.#tokens = tokens;
    this.#receivedAtMs = this.#now().getTime();
    this.#ended = undefined;
    this.#onTokens?.(tokens);
  }

  /** Forget the tokens (after Logout). Does not call onSessionExpired. */
  clear(): void {
    this.#tokens = undefined;
    this.#ended = undefined;
  }

  /**
   * Adopt a new access token of the current session (after StepUp): the refresh token stays.
   * A refresh of the current pair in flight lands first, so its successor refresh token is
   * kept and only its access token replaced. Resolves to false, adopting nothing, when the
   * client is no longer signed in to `sessionId` (signed out, or signed in again meanwhile).
   */
  async adoptAccessToken(sessionId: string, accessToken: string, accessTokenExpiresAt: Date): Promise<boolean> {
    while (this.#flight !== undefined && this.#flight.from === this.#tokens) {
      // The refresh's own callers get its failure; here only its landing matters.
      await this.#flight.result.catch(() => undefined);
    }
    const tokens = this.#tokens;
    if (tokens === undefined || tokens.sessionId !== sessionId) {
      return false;
    }
    const steppedUp = { ...tokens, accessToken, accessTokenExpiresAt };
    if (this.#pendingKey?.from === tokens) {
      // Same refresh token: an unanswered rotation of it must resend the same key.
      this.#pendingKey = { from: steppedUp, key: this.#pendingKey.key };
    }
    this.setTokens(steppedUp);
    return true;
  }

  /**
   * An access token good to send, refreshed first if it is about to expire; undefined when
   * not signed in (the call then goes without credentials and the server answers
   * MISSING_CREDENTIALS). Throws SessionExpired once the session has ended.
   */
  async accessToken(): Promise<string | undefined> {
    const tokens = this.#tokens;
    if (tokens === undefined) {
      if (this.#ended !== undefined) {
        throw this.#ended;
      }
      return undefined;
    }
    if (!this.#isDue(tokens)) {
      return tokens.accessToken;
    }
    return (await this.#refreshFrom(tokens.accessToken)).accessToken;
  }

  /**
   * Refresh now, whatever the expiry; joins a refresh already in flight. `idempotencyKey`
   * replaces the key this rotation would send (a new UUID, or the one of an earlier attempt
   * at it that failed without an answer): 16 to 128 printable ASCII characters.
   */
  async refresh(idempotencyKey?: string): Promise<Tokens> {
    return this.#refreshFrom(this.#signedIn().accessToken, idempotencyKey);
  }

  /**
   * A fresh access token after the server rejected `rejected` as expired. If another call
   * has refreshed since that token was handed out, its result is used and no RPC is made,
   * so N calls rejected together cause one Refresh.
   */
  async renew(rejected: string): Promise<string> {
    return (await this.#refreshFrom(rejected)).accessToken;
  }

  /**
   * Record that the server said the session behind `rejected` is over (a call failed with
   * SessionExpired). Only the first report for the current pair counts.
   */
  endSession(rejected: string, error: SessionExpired): void {
    const tokens = this.#tokens;
    if (tokens !== undefined && tokens.accessToken === rejected) {
      this.#end(tokens, error);
    }
  }

  #signedIn(): Tokens {
    if (this.#tokens !== undefined) {
      return this.#tokens;
    }
    if (this.#ended !== undefined) {
      throw this.#ended;
    }
    throw new MissingCredentials({
      code: Code.Unauthenticated,
      message: "not signed in: no tokens to refresh",
      reason: ErrorReason[ErrorReason.MISSING_CREDENTIALS],
    });
  }

  // Due within the skew of expiry. The skew is capped at half the token's lifetime as this
  // client saw it, so against a server whose access tokens live shorter than the skew the
  // client does not refresh before every call.
  #isDue(tokens: Tokens): boolean {
    const expiresMs = tokens.accessTokenExpiresAt.getTime();
    const lifetimeMs = Math.max(0, expiresMs - this.#receivedAtMs);
    const skewMs = Math.min(this.#skewMs, lifetimeMs / 2);
    return this.#now().getTime() >= expiresMs - skewMs;
  }

  #refreshFrom(staleAccessToken: string, idempotencyKey?: string): Promise<Tokens> {
    const tokens = this.#signedIn();
    if (tokens.accessToken !== staleAccessToken) {
      // Someone refreshed since this token was handed out: use theirs.
      return Promise.resolve(tokens);
    }
    if (this.#flight !== undefined && this.#flight.from === tokens) {
      return this.#flight.result;
    }
    const flight = { from: tokens, result: this.#rotate(tokens, idempotencyKey) };
    this.#flight = flight;
    const land = () => {
      if (this.#flight === flight) {
        this.#flight = undefined;
      }
    };
    flight.result.then(land, land);
    return flight.result;
  }

  /** The rotation's key: the caller's, else that of an unanswered attempt at it, else new. */
  #keyFor(from: Tokens, chosen: string | undefined): string {
    const pending = this.#pendingKey;
    const key = chosen ?? (pending !== undefined && pending.from === from ? pending.key : randomUUID());
    this.#pendingKey = { from, key };
    return key;
  }

  /** The rotation of `from` was answered: its key is spent (a newer pair's is kept). */
  #forgetKey(from: Tokens): void {
    if (this.#pendingKey?.from === from) {
      this.#pendingKey = undefined;
    }
  }

  async #rotate(from: Tokens, chosenKey?: string): Promise<Tokens> {
    const key = this.#keyFor(from, chosenKey);
    let rotated: Tokens;
    try {
      rotated = await this.#refresh(from.refreshToken, key);
    } catch (caught) {
      const error = toAuthsvcError(caught);
      // Answered: the session is over, or the key was refused. Any other failure may have
      // lost an answer, so the key stays for the next attempt.
      if (error instanceof SessionExpired || error instanceof InvalidArgument) {
        this.#forgetKey(from);
      }
      if (error instanceof SessionExpired) {
        this.#end(from, error);
      }
      throw error;
    }
    this.#forgetKey(from);
    if (this.#tokens === from) {
      this.setTokens(rotated);
    }
    return rotated;
  }

  #end(from: Tokens, error: SessionExpired): void {
    if (this.#tokens !== from) {
      return; // Another session was adopted meanwhile; this one's end is not news.
    }
    this.#tokens = undefined;
    this.#ended = error;
    try {
      this.#onSessionExpired?.(error);
    } catch (callbackError) {
      // Not the waiting calls' problem: report it like a throwing event listener would.
      queueMicrotask(() => {
        throw callbackError;
      });
    }
  }
}
