// Every RPC through the typed client, the error mapping, and the interceptor on a raw
// generated client: all against the live server.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AuthClient } from "../src/client.js";
import {
  AuthsvcError,
  EmailTaken,
  InvalidArgument,
  InvalidCredentials,
  MissingCredentials,
  SessionNotFound,
  SessionRevoked,
  toAuthsvcError,
  Unauthenticated,
  WeakPassword,
} from "../src/errors.js";
import { AuthService, LogoutScope, SessionEndReason } from "../src/gen/authsvc/v1/auth_service_pb.js";
import { authInterceptor } from "../src/interceptor.js";
import { TokenManager } from "../src/token_manager.js";
import {
  AuthsvcServer,
  closedAfterSuite,
  newAccount,
  newDataDir,
  rejection,
  removeDataDir,
  type Servers,
  writeGeoIpDatabase,
} from "./harness.js";

function jwtHeader(token: string): { kid?: string } {
  const [header] = token.split(".");
  return JSON.parse(Buffer.from(header ?? "", "base64url").toString("utf8")) as { kid?: string };
}

export function rpcTests(servers: () => Servers): void {
  const newClient = closedAfterSuite(
    (options: { userAgent?: string } = {}) => new AuthClient({ baseUrl: servers().main.baseUrl, ...options }),
  );

  describe("typed client, one test per RPC", () => {
    test("register creates an account and signs the client in", async () => {
      const client = newClient();
      const tokens = await client.register({ ...newAccount(), displayName: "Ada" });
      assert.match(tokens.userId, /^[0-9a-f-]{36}$/);
      assert.match(tokens.sessionId, /^[0-9a-f-]{36}$/);
      assert.ok(tokens.accessTokenExpiresAt.getTime() > Date.now());
      assert.ok(tokens.refreshTokenExpiresAt > tokens.accessTokenExpiresAt);
      assert.equal(client.tokens.tokens, tokens);
    });

    test("login starts another session for the same user", async () => {
      const account = newAccount();
      const registered = await newClient().register(account);
      const client = newClient();
      const tokens = await client.login({ ...account, deviceName: "laptop" });
      assert.equal(tokens.userId, registered.userId);
      assert.notEqual(tokens.sessionId, registered.sessionId);
      assert.equal(client.tokens.tokens, tokens);
    });

    test("refresh rotates both tokens within the same session", async () => {
      const client = newClient();
      const before = await client.register(newAccount());
      const after = await client.refresh();
      assert.equal(after.sessionId, before.sessionId);
      assert.notEqual(after.refreshToken, before.refreshToken);
      assert.notEqual(after.accessToken, before.accessToken);
      assert.equal(client.tokens.tokens, after);
    });

    test("listSessions lists the user's sessions and marks the caller's as current", async () => {
      const account = newAccount();
      const client = newClient({ userAgent: "authsvc-node-test/1.0" });
      const mine = await client.register(account);
      const other = await newClient().login(account);
      const page = await client.listSessions({ pageSize: 10 });
      assert.deepEqual(new Set(page.sessions.map((s) => s.sessionId)), new Set([mine.sessionId, other.sessionId]));
      const current = page.sessions.filter((s) => s.current);
      assert.deepEqual(current.map((s) => s.sessionId), [mine.sessionId]);
      assert.equal(current[0]?.userAgent, "authsvc-node-test/1.0");
      assert.equal(page.nextPageToken, "");
    });

    test("iterSessions walks every page of listSessions", async () => {
      const account = newAccount();
      const client = newClient();
      const mine = await client.register(account);
      const others = [await newClient().login(account), await newClient().login(account)];
      const seen: string[] = [];
      for await (const session of client.iterSessions(1)) {
        seen.push(session.sessionId);
      }
      assert.deepEqual(new Set(seen), new Set([mine.sessionId, ...others.map((t) => t.sessionId)]));
      assert.equal(seen.length, 3);
    });

    test("revokeSession ends another session of the caller", async () => {
      const account = newAccount();
      const client = newClient();
      await client.register(account);
      const other = await newClient().login(account);
      await client.revokeSession(other.sessionId, "lost phone");
      const page = await client.listSessions();
      assert.ok(!page.sessions.some((s) => s.sessionId === other.sessionId));
      const validation = await client.validateToken(other.accessToken);
      assert.equal(validation.inactiveReason, "SESSION_REVOKED");
    });

    test("changePassword ends the other sessions, keeps this one, and the new password signs in", async () => {
      const account = newAccount();
      const client = newClient();
      const mine = await client.register(account);
      const other = await newClient().login(account);
      const newPassword = "a new and longer passphrase";
      const ended = await client.changePassword({ currentPassword: account.password, newPassword });
      assert.equal(ended, 1);
      const page = await client.listSessions();
      assert.deepEqual(
        page.sessions.map((s) => s.sessionId),
        [mine.sessionId],
      );
      const validation = await client.validateToken(other.accessToken);
      assert.equal(validation.inactiveReason, "SESSION_REVOKED");
      const old = await rejection(newClient().login(account));
      assert.ok(old instanceof InvalidCredentials, String(old));
      await newClient().login({ ...account, password: newPassword });
    });

    test("validateToken reports an active token's user, session and claims", async () => {
      const client = newClient();
      const tokens = await client.register(newAccount());
      const validation = await client.validateToken(tokens.accessToken);
      assert.equal(validation.active, true);
      assert.equal(validation.inactiveReason, "");
      assert.equal(validation.userId, tokens.userId);
      assert.equal(validation.sessionId, tokens.sessionId);
      assert.equal(validation.expiresAt?.getTime(), tokens.accessTokenExpiresAt.getTime());
      assert.equal(validation.claims["sid"], tokens.sessionId);
    });

    test("getJwks returns the key that signed the access token", async () => {
      const client = newClient();
      const tokens = await client.register(newAccount());
      const jwks = await client.getJwks();
      const kid = jwtHeader(tokens.accessToken).kid;
      assert.ok(kid);
      assert.ok(jwks.keys.some((key) => key.kid === kid), `no key ${kid} in ${JSON.stringify(jwks)}`);
    });

    test("logout revokes this session and signs the client out", async () => {
      const client = newClient();
      const tokens = await client.register(newAccount());
      const revoked = await client.logout(LogoutScope.THIS_SESSION);
      assert.equal(revoked, 1);
      assert.equal(client.tokens.tokens, undefined);
      assert.ok((await rejection(client.listSessions())) instanceof MissingCredentials);
      const validation = await client.validateToken(tokens.accessToken);
      assert.equal(validation.active, false);
      assert.equal(validation.inactiveReason, "SESSION_REVOKED");
    });
  });

  describe("listSessions with a GeoIP database on the server", () => {
    let located: AuthsvcServer | undefined;
    let databaseDir: string | undefined;

    before(async () => {
      databaseDir = await newDataDir();
      const database = path.join(databaseDir, "cities.mmdb");
      await writeGeoIpDatabase(database);
      located = await AuthsvcServer.start(servers().main.dataDir, { AUTHSVC_GEOIP_DATABASE: database });
    });
    after(async () => {
      await located?.stop();
      if (databaseDir !== undefined) {
        await removeDataDir(databaseDir);
      }
    });

    test("a session shows the country and city of its login address", async () => {
      const client = new AuthClient({ baseUrl: located!.baseUrl });
      try {
        // Loopback, where this test connects from, is Wellington in the test database.
        const tokens = await client.register(newAccount());
        const page = await client.listSessions();
        const session = page.sessions.find((s) => s.sessionId === tokens.sessionId);
        assert.deepEqual([session?.country, session?.city], ["NZ", "Wellington"]);
      } finally {
        client.close();
      }
    });
  });

  describe("errors carry the status code and ErrorInfo reason", () => {
    test("login with a wrong password throws InvalidCredentials", async () => {
      const account = newAccount();
      await newClient().register(account);
      const error = await rejection(newClient().login({ ...account, password: "not the password" }));
      assert.ok(error instanceof InvalidCredentials, String(error));
      assert.ok(error instanceof Unauthenticated);
      assert.equal(error.reason, "INVALID_CREDENTIALS");
      assert.equal(error.domain, "authsvc");
    });

    test("login with an unknown email throws the same InvalidCredentials", async () => {
      const error = await rejection(newClient().login(newAccount()));
      assert.ok(error instanceof InvalidCredentials, String(error));
      assert.equal(error.reason, "INVALID_CREDENTIALS");
    });

    test("register with a taken email and another password throws InvalidCredentials, not EmailTaken", async () => {
      const account = newAccount();
      await newClient().register(account);
      const error = await rejection(newClient().register({ ...account, password: "another password 42" }));
      assert.ok(error instanceof InvalidCredentials, String(error));
      assert.ok(!(error instanceof EmailTaken));
    });

    test("register with a taken email and its owner's password signs in to that account", async () => {
      const account = newAccount();
      const first = await newClient().register(account);
      const again = await newClient().register(account);
      assert.equal(again.userId, first.userId);
      assert.notEqual(again.sessionId, first.sessionId);
    });

    test("register with a malformed email throws InvalidArgument naming the field", async () => {
      const error = await rejection(newClient().register({ ...newAccount(), email: "not-an-email" }));
      assert.ok(error instanceof InvalidArgument, String(error));
      assert.equal(error.reason, "INVALID_FIELD");
      assert.equal(error.field, "email");
    });

    test("changePassword with a wrong current password throws InvalidCredentials", async () => {
      const client = newClient();
      const account = newAccount();
      await client.register(account);
      const error = await rejection(
        client.changePassword({ currentPassword: "not the password", newPassword: "a new and longer passphrase" }),
      );
      assert.ok(error instanceof InvalidCredentials, String(error));
      assert.ok(!(error instanceof SessionRevoked));
      assert.equal((await client.listSessions()).sessions.length, 1);
    });

    test("changePassword to a weak password throws WeakPassword naming new_password", async () => {
      const client = newClient();
      const account = newAccount();
      await client.register(account);
      const error = await rejection(client.changePassword({ currentPassword: account.password, newPassword: "short" }));
      assert.ok(error instanceof WeakPassword, String(error));
      assert.equal(error.field, "new_password");
      await newClient().login(account);
    });

    test("getSession answers for the caller's live session and for an ended one with why it ended", async () => {
      const account = newAccount();
      const client = newClient();
      const mine = await client.register(account);
      const other = await newClient().login(account);
      await client.revokeSession(other.sessionId);
      const live = await client.getSession(mine.sessionId);
      assert.equal(live.sessionId, mine.sessionId);
      assert.equal(live.current, true);
      assert.equal(live.endReason, SessionEndReason.UNSPECIFIED);
      assert.equal(live.endedAt, undefined);
      assert.ok(live.idleExpiresAt > live.lastActiveAt);
      const ended = await client.getSession(other.sessionId);
      assert.equal(ended.current, false);
      assert.equal(ended.endReason, SessionEndReason.USER_REVOKED);
      assert.ok(ended.endedAt instanceof Date);
    });

    test("getSession of another user's session throws SessionNotFound", async () => {
      const client = newClient();
      await client.register(newAccount());
      const stranger = await newClient().register(newAccount());
      const error = await rejection(client.getSession(stranger.sessionId));
      assert.ok(error instanceof SessionNotFound, String(error));
    });

    test("clients given one connection use it, and close() of one leaves it to the others", async () => {
      const baseUrl = servers().main.baseUrl;
      const connection = new Http2SessionManager(baseUrl);
      try {
        const first = new AuthClient({ baseUrl, connection });
        const second = new AuthClient({ baseUrl, connection });
        await first.register(newAccount());
        assert.equal(connection.state(), "open");
        first.close();
        await second.register(newAccount());
        assert.equal((await second.listSessions()).sessions.length, 1);
        assert.equal(connection.state(), "open");
      } finally {
        connection.abort();
      }
    });

    test("revokeSession of a session that is not the caller's throws SessionNotFound", async () => {
      const client = newClient();
      await client.register(newAccount());
      const stranger = await newClient().register(newAccount());
      const error = await rejection(client.revokeSession(stranger.sessionId));
      assert.ok(error instanceof SessionNotFound, String(error));
      assert.equal(error.reason, "SESSION_NOT_FOUND");
    });
  });

  describe("authInterceptor on a raw generated client", () => {
    test("attaches the manager's access token as authorization: Bearer", async () => {
      const tokens = await newClient().register(newAccount());
      const baseUrl = servers().main.baseUrl;
      const withTokenConnection = new Http2SessionManager(baseUrl);
      const withoutTokenConnection = new Http2SessionManager(baseUrl);
      try {
        const manager = new TokenManager({ refresh: () => assert.fail("no refresh expected") });
        manager.setTokens(tokens);
        const withToken = createClient(
          AuthService,
          createGrpcTransport({ baseUrl, sessionManager: withTokenConnection, interceptors: [authInterceptor(manager)] }),
        );
        const withoutToken = createClient(
          AuthService,
          createGrpcTransport({ baseUrl, sessionManager: withoutTokenConnection }),
        );

        const page = await withToken.listSessions({});
        assert.deepEqual(
          page.sessions.filter((s) => s.current).map((s) => s.sessionId),
          [tokens.sessionId],
        );
        const error = toAuthsvcError(await rejection(withoutToken.listSessions({})));
        assert.ok(error instanceof MissingCredentials, String(error));
        assert.ok(error instanceof AuthsvcError);
      } finally {
        withTokenConnection.abort();
        withoutTokenConnection.abort();
      }
    });
  });
}
