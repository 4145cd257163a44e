// Every reason the client maps, end to end against the live servers: the class (and its
// base), `reason`, the ErrorInfo metadata and RetryInfo delay, and what the token manager
// does with each (ends the session, or keeps the tokens). rpcs.ts and refresh.ts cover
// INVALID_CREDENTIALS, EMAIL_TAKEN, INVALID_FIELD (email), SESSION_NOT_FOUND,
// MISSING_CREDENTIALS, TOKEN_EXPIRED (server log), SESSION_REVOKED and REFRESH_TOKEN_REUSED;
// this file covers the rest that a running service can be made to answer.
//
// Waits are upper bounds on instants the server itself reported (a token's or session's
// expiry, a few seconds away), never assertions on how long something took.

import assert from "node:assert/strict";
import { createServer } from "node:net";
import { describe, test } from "node:test";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { AuthClient, type AuthClientOptions } from "../src/client.js";
import { ErrorInfoSchema } from "../src/error_details.js";
import {
  AuthsvcError,
  CursorExpired,
  DatabaseUnavailable,
  EmailTaken,
  FactorAlreadyEnrolled,
  FactorNotFound,
  InvalidArgument,
  InvalidCredentials,
  InvalidPageToken,
  MissingCredentials,
  NotReady,
  OperatorCredentialsRequired,
  OperatorNotAllowed,
  PasskeyChallengeInvalid,
  PasskeysDisabled,
  PasswordResetTokenInvalid,
  PendingLoginInvalid,
  PermissionDenied,
  RateLimited,
  RefreshTokenExpired,
  RefreshTokenInvalid,
  RefreshTokenReused,
  RegistrationDisabled,
  SecondFactorInvalid,
  ServiceCredentialsRequired,
  SessionExpired,
  SessionLimitReached,
  SessionNotFound,
  SessionRevoked,
  StepUpRequired,
  SubscriberTooSlow,
  toAuthsvcError,
  TokenExpired,
  TokenInvalid,
  Unauthenticated,
  Unavailable,
  UserDisabled,
  UserNotFound,
  WebhookDeliveryNotFound,
  WeakPassword,
  type Reason,
} from "../src/errors.js";
import { SessionEndReason } from "../src/gen/authsvc/v1/auth_service_pb.js";
import { ErrorReason } from "../src/gen/authsvc/v1/error_reason_pb.js";
import type { Tokens } from "../src/token_manager.js";
import {
  closedAfterSuite,
  newAccount,
  REFRESH_RPC,
  rejection,
  TaggedClient,
  waitUntilPast,
  type Servers,
} from "./harness.js";

/** The server's default AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT_AND_IP (all the tests sign in from one
 * address) and AUTHSVC_LOGIN_FAILURE_WINDOW. */
const LOGIN_FAILURES_PER_ACCOUNT_AND_IP = 5;
const LOGIN_FAILURE_WINDOW_MS = 15 * 60_000;
const CONCURRENT_CALLS = 20;

/** A well-formed refresh token the server never issued: a user id (22 URL-safe base64
 * characters), a dot, and 43 more. */
function bogusRefreshToken(): string {
  return "A".repeat(22) + "." + "A".repeat(21) + "_" + "z".repeat(21);
}

/** A TCP port on 127.0.0.1 that nothing listens on (we bound it, then closed it). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address !== null && typeof address === "object");
  return address.port;
}

/** Counts the Refresh RPCs a client attempts, whether or not they reach a server. */
function refreshCounter(): { interceptor: Interceptor; count: () => number } {
  let count = 0;
  return {
    interceptor: (next) => async (req) => {
      if (req.method.name === "Refresh") {
        count++;
      }
      return next(req);
    },
    count: () => count,
  };
}

/** The code each reason comes with and the class it throws, as the classes' comments promise. */
const RAISES: Record<Reason, [Code, abstract new (...args: never[]) => AuthsvcError]> = {
  INVALID_FIELD: [Code.InvalidArgument, InvalidArgument],
  WEAK_PASSWORD: [Code.InvalidArgument, WeakPassword],
  INVALID_PAGE_TOKEN: [Code.InvalidArgument, InvalidPageToken],
  EMAIL_TAKEN: [Code.AlreadyExists, EmailTaken],
  REGISTRATION_DISABLED: [Code.PermissionDenied, RegistrationDisabled],
  INVALID_CREDENTIALS: [Code.Unauthenticated, InvalidCredentials],
  MISSING_CREDENTIALS: [Code.Unauthenticated, MissingCredentials],
  TOKEN_INVALID: [Code.Unauthenticated, TokenInvalid],
  TOKEN_EXPIRED: [Code.Unauthenticated, TokenExpired],
  REFRESH_TOKEN_INVALID: [Code.Unauthenticated, RefreshTokenInvalid],
  REFRESH_TOKEN_EXPIRED: [Code.Unauthenticated, RefreshTokenExpired],
  REFRESH_TOKEN_REUSED: [Code.Unauthenticated, RefreshTokenReused],
  SESSION_REVOKED: [Code.Unauthenticated, SessionRevoked],
  SESSION_EXPIRED: [Code.Unauthenticated, SessionExpired],
  SESSION_NOT_FOUND: [Code.NotFound, SessionNotFound],
  RATE_LIMITED: [Code.ResourceExhausted, RateLimited],
  SERVER_BUSY: [Code.ResourceExhausted, RateLimited],
  DATABASE_UNAVAILABLE: [Code.Unavailable, DatabaseUnavailable],
  NOT_READY: [Code.Unavailable, NotReady],
  DEADLINE_EXCEEDED: [Code.DeadlineExceeded, AuthsvcError],
  INTERNAL: [Code.Internal, AuthsvcError],
  SERVICE_CREDENTIALS_REQUIRED: [Code.Unauthenticated, ServiceCredentialsRequired],
  CURSOR_EXPIRED: [Code.OutOfRange, CursorExpired],
  SUBSCRIBER_TOO_SLOW: [Code.ResourceExhausted, SubscriberTooSlow],
  OPERATOR_CREDENTIALS_REQUIRED: [Code.Unauthenticated, OperatorCredentialsRequired],
  OPERATOR_NOT_ALLOWED: [Code.PermissionDenied, OperatorNotAllowed],
  USER_NOT_FOUND: [Code.NotFound, UserNotFound],
  USER_DISABLED: [Code.PermissionDenied, UserDisabled],
  PASSWORD_RESET_TOKEN_INVALID: [Code.Unauthenticated, PasswordResetTokenInvalid],
  SESSION_LIMIT_REACHED: [Code.ResourceExhausted, SessionLimitReached],
  WEBHOOK_DELIVERY_NOT_FOUND: [Code.NotFound, WebhookDeliveryNotFound],
  STEP_UP_REQUIRED: [Code.PermissionDenied, StepUpRequired],
  SECOND_FACTOR_INVALID: [Code.Unauthenticated, SecondFactorInvalid],
  PENDING_LOGIN_INVALID: [Code.Unauthenticated, PendingLoginInvalid],
  FACTOR_NOT_FOUND: [Code.NotFound, FactorNotFound],
  PASSKEY_CHALLENGE_INVALID: [Code.Unauthenticated, PasskeyChallengeInvalid],
  PASSKEYS_DISABLED: [Code.FailedPrecondition, PasskeysDisabled],
  FACTOR_ALREADY_ENROLLED: [Code.AlreadyExists, FactorAlreadyEnrolled],
};

describe("every reason of the generated ErrorReason throws its class", () => {
  const reasons = Object.keys(ErrorReason).filter(
    (name): name is Reason => Number.isNaN(Number(name)) && name !== "ERROR_REASON_UNSPECIFIED",
  );
  for (const reason of reasons) {
    test(reason, () => {
      const [code, ErrorType] = RAISES[reason];
      const refused = new ConnectError("refused", code, undefined, [
        { desc: ErrorInfoSchema, value: { reason, domain: "authsvc" } },
      ]);

      const error = toAuthsvcError(refused);

      assert.deepEqual([error.constructor, error.code, error.reason], [ErrorType, code, reason]);
    });
  }
});

export function errorTests(servers: () => Servers): void {
  const closing = closedAfterSuite((client: AuthClient) => client);
  const newClient = (server: keyof Servers, options: Partial<AuthClientOptions> = {}) =>
    closing(new AuthClient({ ...options, baseUrl: servers()[server].baseUrl }));
  const newTagged = closedAfterSuite(
    (server: keyof Servers, options: Partial<AuthClientOptions> = {}) => new TaggedClient(servers()[server], options),
  );

  describe("every reason maps to its class, end to end", () => {
    test("register with a short password throws WeakPassword naming the field", async () => {
      const error = await rejection(newClient("main").register({ ...newAccount(), password: "short" }));
      assert.ok(error instanceof WeakPassword, String(error));
      assert.ok(error instanceof InvalidArgument);
      assert.ok(error instanceof AuthsvcError);
      assert.equal(error.reason, "WEAK_PASSWORD");
      assert.equal(error.domain, "authsvc");
      assert.equal(error.field, "password");
    });

    test("listSessions with a garbage pageToken throws InvalidPageToken", async () => {
      const client = newClient("main");
      await client.register(newAccount());
      const error = await rejection(client.listSessions({ pageToken: "not-a-page-token" }));
      assert.ok(error instanceof InvalidPageToken, String(error));
      assert.ok(error instanceof InvalidArgument);
      assert.equal(error.reason, "INVALID_PAGE_TOKEN");
      assert.equal(error.field, "page_token");
      // Not a session problem: the client stays signed in.
      assert.ok(client.tokens.tokens !== undefined);
    });

    test("an over-long device name throws InvalidArgument with the field in its metadata", async () => {
      const error = await rejection(
        newClient("main").register({ ...newAccount(), deviceName: "x".repeat(101) }),
      );
      assert.ok(error instanceof InvalidArgument, String(error));
      assert.ok(error instanceof AuthsvcError);
      assert.ok(!(error instanceof WeakPassword) && !(error instanceof InvalidPageToken));
      assert.equal(error.reason, "INVALID_FIELD");
      assert.deepEqual(error.metadata, { field: "device_name" });
      assert.equal(error.field, "device_name");
    });

    test("register while the sign-up lane is full throws RateLimited (SERVER_BUSY) with retryDelayMs", async () => {
      const client = newClient("busy");
      const answers = await Promise.allSettled(Array.from({ length: 5 }, () => client.register(newAccount())));

      const refused = answers.flatMap((answer) => (answer.status === "rejected" ? [answer.reason] : []));
      assert.ok(refused.length >= 1 && refused.length < answers.length, `${refused.length} refused`);
      for (const error of refused) {
        assert.ok(error instanceof RateLimited, String(error));
        assert.equal(error.reason, "SERVER_BUSY");
        assert.ok((error.retryDelayMs ?? 0) >= 1_000, String(error.retryDelayMs));
      }
    });

    test("register where registration is disabled throws RegistrationDisabled", async () => {
      const error = await rejection(newClient("restricted").register(newAccount()));
      assert.ok(error instanceof RegistrationDisabled, String(error));
      assert.ok(error instanceof PermissionDenied);
      assert.ok(error instanceof AuthsvcError);
      assert.equal(error.reason, "REGISTRATION_DISABLED");
    });

    test("a garbage bearer on client.raw maps to TokenInvalid", async () => {
      const client = newClient("main");
      await client.register(newAccount());
      // A call that already has `authorization` is left alone by the interceptor.
      for (const authorization of ["Bearer not.a.jwt", "Basic dXNlcjpwYXNz"]) {
        const error = toAuthsvcError(await rejection(client.raw.listSessions({}, { headers: { authorization } })));
        assert.ok(error instanceof TokenInvalid, `${authorization}: ${String(error)}`);
        assert.ok(error instanceof Unauthenticated);
        assert.equal(error.reason, "TOKEN_INVALID");
      }
    });

    test("a token manager holding a bogus access token: TokenInvalid, no refresh, session not ended", async () => {
      const real = await newClient("main").register(newAccount());
      const ended: SessionExpired[] = [];
      const taggedClient = newTagged("main", {
        tokens: { ...real, accessToken: "bogus-access-token" },
        onSessionExpired: (error) => ended.push(error),
      });

      const error = await rejection(taggedClient.client.listSessions());

      assert.ok(error instanceof TokenInvalid, String(error));
      assert.ok(error instanceof Unauthenticated);
      assert.ok(!(error instanceof SessionExpired));
      assert.equal(error.reason, "TOKEN_INVALID");
      assert.deepEqual(ended, []);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 0);
    });

    test("refresh with a bogus, well-formed refresh token: RefreshTokenInvalid ends the session once", async () => {
      const real = await newClient("main").register(newAccount());
      const ended: SessionExpired[] = [];
      const taggedClient = newTagged("main", {
        tokens: { ...real, refreshToken: bogusRefreshToken() },
        onSessionExpired: (error) => ended.push(error),
      });
      const client = taggedClient.client;

      const error = await rejection(client.refresh());
      const later = await rejection(client.listSessions());

      assert.ok(error instanceof RefreshTokenInvalid, String(error));
      assert.ok(error instanceof SessionExpired);
      assert.ok(error instanceof Unauthenticated);
      assert.equal(error.reason, "REFRESH_TOKEN_INVALID");
      assert.deepEqual(ended, [error]);
      assert.equal(later, error);
      assert.equal(client.tokens.tokens, undefined);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
      assert.equal(await taggedClient.serverCount("/authsvc.v1.AuthService/ListSessions"), 0);
    });

    test("failed logins past the account's limit throw RateLimited with retryDelayMs from RetryInfo", async () => {
      // An account of its own, so its bucket limits no other test (the per-address limit,
      // 50 by default, is far from the suite's few failures).
      const account = newAccount();
      const client = newClient("main");
      await client.register(account);
      const firstFailureSentAt = Date.now();
      for (let i = 0; i < LOGIN_FAILURES_PER_ACCOUNT_AND_IP; i++) {
        const error = await rejection(client.login({ ...account, password: "not the password" }));
        assert.equal((error as AuthsvcError).reason, "INVALID_CREDENTIALS", String(error));
      }

      const limited = await rejection(client.login({ ...account, password: "not the password" }));
      const answeredAt = Date.now();
      // The lock holds for the right password too.
      const rightPassword = await rejection(client.login(account));

      assert.ok(limited instanceof RateLimited, String(limited));
      assert.ok(limited instanceof AuthsvcError);
      assert.equal(limited.reason, "RATE_LIMITED");
      const delay = limited.retryDelayMs;
      assert.ok(delay !== undefined, "no RetryInfo decoded");
      // The server rounds the rest of the window up to whole seconds. The window started
      // at the first failure, so at most what has passed since then is gone from it.
      assert.equal(delay % 1_000, 0, String(delay));
      assert.ok(delay <= LOGIN_FAILURE_WINDOW_MS, String(delay));
      assert.ok(delay >= LOGIN_FAILURE_WINDOW_MS - (answeredAt - firstFailureSentAt), String(delay));
      assert.ok(rightPassword instanceof RateLimited, String(rightPassword));
      assert.equal(rightPassword.reason, "RATE_LIMITED");
    });
  });

  // These wait (bounded, a few seconds) for instants the server reported; they are
  // independent, so they wait together.
  describe("reasons that need an expiry to pass", { concurrency: true }, () => {
    test("an access token past its exp on client.raw maps to TokenExpired", async () => {
      const client = newClient("shortTtl");
      const tokens = await client.register(newAccount());
      await waitUntilPast(tokens.accessTokenExpiresAt);

      const error = toAuthsvcError(
        await rejection(
          client.raw.listSessions({}, { headers: { authorization: `Bearer ${tokens.accessToken}` } }),
        ),
      );

      assert.ok(error instanceof TokenExpired, String(error));
      assert.ok(error instanceof Unauthenticated);
      assert.ok(!(error instanceof SessionExpired));
      assert.equal(error.reason, "TOKEN_EXPIRED");
    });

    test("an idle session: SessionExpired (SESSION_EXPIRED), onSessionExpired once, calls rejected", async () => {
      const account = newAccount();
      await newClient("main").register(account); // registration is off on "restricted"
      // Signed in where sessions idle out after 2 s. A: a call meets the ended session. The
      // server caps a token's exp at its session's deadline (less the clock skew it allows),
      // so only a client whose clock lags far behind sends it instead of refreshing, as B does.
      const endedA: SessionExpired[] = [];
      const a = newTagged("restricted", {
        now: () => new Date(0),
        onSessionExpired: (error) => endedA.push(error),
      });
      const tokensA = await a.client.login(account);
      // B: many calls meet it through the proactive refresh they share (clock past exp).
      let clockMs = Date.now();
      const endedB: SessionExpired[] = [];
      const b = newTagged("restricted", {
        now: () => new Date(clockMs),
        onSessionExpired: (error) => endedB.push(error),
      });
      const tokensB = await b.client.login(account);
      // A refresh token expires with the idle deadline it was issued with.
      const idleDeadlines = [tokensA, tokensB].map((t) => t.refreshTokenExpiresAt.getTime());
      await waitUntilPast(new Date(Math.max(...idleDeadlines)));

      const errorA = await rejection(a.client.listSessions());
      const laterA = await rejection(a.client.listSessions());
      clockMs = tokensB.accessTokenExpiresAt.getTime() + 1_000;
      const resultsB = await Promise.allSettled(
        Array.from({ length: CONCURRENT_CALLS }, () => b.client.listSessions()),
      );

      assert.ok(errorA instanceof SessionExpired, String(errorA));
      assert.equal(errorA.constructor, SessionExpired); // the reason's own class, no subclass
      assert.ok(errorA instanceof Unauthenticated);
      assert.equal(errorA.reason, "SESSION_EXPIRED");
      assert.deepEqual(endedA, [errorA]);
      assert.equal(laterA, errorA);
      assert.equal(a.client.tokens.tokens, undefined);
      assert.equal(await a.serverCount("/authsvc.v1.AuthService/ListSessions"), 1);
      assert.equal(await a.serverCount(REFRESH_RPC), 0);

      // Why and when, from the ErrorInfo metadata: each session's idle deadline.
      assert.equal(errorA.endReason, SessionEndReason.IDLE_TIMEOUT);
      // (Microseconds on the wire: each side rounds to milliseconds its own way.)
      assert.ok(Math.abs((errorA.endedAt?.getTime() ?? 0) - tokensA.refreshTokenExpiresAt.getTime()) <= 1);

      assert.equal(endedB.length, 1);
      const errorB = endedB[0];
      assert.ok(errorB instanceof SessionExpired);
      assert.equal(errorB.reason, "SESSION_EXPIRED");
      assert.equal(errorB.endReason, SessionEndReason.IDLE_TIMEOUT);
      assert.ok(Math.abs((errorB.endedAt?.getTime() ?? 0) - tokensB.refreshTokenExpiresAt.getTime()) <= 1);
      for (const result of resultsB) {
        assert.ok(result.status === "rejected" && result.reason === errorB, String(result.status));
      }
      assert.equal(b.client.tokens.tokens, undefined);
      assert.equal(await b.serverCount(REFRESH_RPC), 1);
    });

    test("a password change on another device: onSessionExpired gets SessionRevoked with endReason PASSWORD_CHANGED", async () => {
      const account = newAccount();
      const ended: SessionExpired[] = [];
      const mine = newClient("main", { onSessionExpired: (error) => ended.push(error) });
      const pair = await mine.register(account);
      const other = newClient("main");
      await other.login(account);
      const before = Date.now();
      await other.changePassword({ currentPassword: account.password, newPassword: "a new and longer passphrase" });
      const after = Date.now();

      const error = await rejection(mine.listSessions());

      assert.ok(error instanceof SessionRevoked, String(error));
      assert.equal(error.reason, "SESSION_REVOKED");
      assert.equal(error.endReason, SessionEndReason.PASSWORD_CHANGED);
      const endedAt = error.endedAt?.getTime() ?? 0;
      assert.ok(before - 1_000 <= endedAt && endedAt <= after + 1_000, String(error.endedAt));
      assert.deepEqual(ended, [error]);
      const validation = await other.validateToken(pair.accessToken);
      assert.equal(validation.endReason, SessionEndReason.PASSWORD_CHANGED);
      assert.ok(Math.abs((validation.endedAt?.getTime() ?? 0) - endedAt) <= 1);
    });

    test("a rotated refresh token replayed past its own expiry: RefreshTokenExpired, the session lives on", async () => {
      const account = newAccount();
      await newClient("main").register(account);
      // Issued where the idle timeout is 2 s, so the first refresh token expires in 2 s.
      const first = await newClient("restricted").login(account);
      // Rotated on a replica with the default 7 d idle timeout: the session slides on. Rotated
      // without an idempotency key, as the client's own rotations are not: a token rotated
      // with a key stays on record while its successor may be current (exactly_once.ts).
      const answer = await newClient("main").raw.refresh({ refreshToken: first.refreshToken });
      const rotated: Tokens = {
        ...first,
        accessToken: answer.accessToken,
        accessTokenExpiresAt: timestampDate(answer.accessTokenExpiresAt ?? assert.fail("no expiry")),
        refreshToken: answer.refreshToken,
        refreshTokenExpiresAt: timestampDate(answer.refreshTokenExpiresAt ?? assert.fail("no expiry")),
      };
      assert.equal(answer.sessionId, first.sessionId);
      assert.ok(rotated.refreshTokenExpiresAt > first.refreshTokenExpiresAt);
      const holder = newClient("main", { tokens: rotated });
      await waitUntilPast(first.refreshTokenExpiresAt);

      // Replayed where the grace period is 0 s: elsewhere, within 10 s of its rotation, the
      // expired token would still recover its successor (two tabs at the expiry instant).
      const ended: SessionExpired[] = [];
      const copy = newClient("shortTtl", { tokens: first, onSessionExpired: (error) => ended.push(error) });
      const error = await rejection(copy.refresh());

      assert.ok(error instanceof RefreshTokenExpired, String(error));
      assert.ok(error instanceof SessionExpired);
      assert.ok(error instanceof Unauthenticated);
      assert.equal(error.reason, "REFRESH_TOKEN_EXPIRED");
      assert.deepEqual(ended, [error]);
      assert.equal(copy.tokens.tokens, undefined);
      // Past its expiry the token is no evidence of theft: the session was not revoked.
      const page = await holder.listSessions();
      assert.ok(page.sessions.some((s) => s.current && s.sessionId === first.sessionId));
      assert.equal((await holder.refresh()).sessionId, first.sessionId);
    });
  });

  describe("refresh skew and transient failures", () => {
    test("a custom refreshSkewMs is honoured", async () => {
      const skewMs = 5 * 60_000;
      let clockMs = Date.now();
      const taggedClient = newTagged("main", { refreshSkewMs: skewMs, now: () => new Date(clockMs) });
      const client = taggedClient.client;
      const first = await client.register(newAccount());
      const expiresMs = first.accessTokenExpiresAt.getTime();

      clockMs = expiresMs - skewMs - 1_000; // outside the 5 min skew: not due
      await client.listSessions();
      assert.equal(client.tokens.tokens?.accessToken, first.accessToken);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 0);

      clockMs = expiresMs - skewMs + 1_000; // inside 5 min (though not 60 s, the default): due
      await client.listSessions();
      assert.notEqual(client.tokens.tokens?.accessToken, first.accessToken);
      assert.equal(client.tokens.tokens?.sessionId, first.sessionId);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
    });

    test("the skew is capped at half the token's lifetime: 3 s tokens, 60 s skew, no refresh per call", async () => {
      const frozen = Date.now();
      let clockMs = frozen;
      const taggedClient = newTagged("shortTtl", { refreshSkewMs: 60_000, now: () => new Date(clockMs) });
      const client = taggedClient.client;
      const first = await client.register(newAccount());
      const expiresMs = first.accessTokenExpiresAt.getTime();
      const lifetimeMs = expiresMs - frozen; // as the client saw it: 3 s and a little
      assert.ok(lifetimeMs < 60_000 * 2, String(lifetimeMs));

      for (let i = 0; i < 3; i++) {
        await client.listSessions();
      }
      // Within the 60 s skew, but not within half the lifetime: still not due.
      clockMs = expiresMs - lifetimeMs / 2 - 200;
      await client.listSessions();
      assert.equal(client.tokens.tokens?.accessToken, first.accessToken);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 0);

      clockMs = expiresMs - lifetimeMs / 2 + 200; // within half the lifetime: due
      await client.listSessions();
      assert.notEqual(client.tokens.tokens?.accessToken, first.accessToken);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
    });

    test("an unreachable server is transient: the tokens are kept and the next call tries again", async () => {
      const real = await newClient("main").register(newAccount());
      const ended: SessionExpired[] = [];
      const refreshes = refreshCounter();
      const offline = new AuthClient({
        baseUrl: `http://127.0.0.1:${await closedPort()}`,
        tokens: real,
        now: () => new Date(real.accessTokenExpiresAt.getTime() + 1_000), // every call refreshes first
        onSessionExpired: (error) => ended.push(error),
        interceptors: [refreshes.interceptor],
      });
      closing(offline);

      const first = await rejection(offline.listSessions());
      const second = await rejection(offline.listSessions());

      for (const error of [first, second]) {
        assert.ok(error instanceof Unavailable, String(error));
        assert.ok(error instanceof AuthsvcError);
        assert.ok(!(error instanceof SessionExpired));
        assert.equal(error.reason, "");
      }
      assert.equal(refreshes.count(), 2); // no cached failure: each call tried again
      assert.deepEqual(ended, []);
      const kept: Tokens | undefined = offline.tokens.tokens;
      assert.equal(kept, real);
      // The kept pair is still good where the server is reachable.
      const online = newClient("main", { tokens: real });
      assert.equal((await online.refresh()).sessionId, real.sessionId);
    });
  });
}
