// Automatic refresh against the live server: proactive (by the client's injected clock),
// reactive (the server rejects an expired token), single-flight, and the end of a session.
//
// Proactive tests move the client's clock, not the server's: no waiting. Reactive tests
// need the server itself to see an expired token, so they use the replica with 3 s access
// tokens and wait, bounded, until the token's own expiry instant has passed.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { RefreshTokenReused, SessionExpired, SessionRevoked } from "../src/errors.js";
import { newAccount, REFRESH_RPC, rejection, TaggedClient, waitUntilPast, type Servers } from "./harness.js";

const LIST_SESSIONS_RPC = "/authsvc.v1.AuthService/ListSessions";
const CONCURRENT_CALLS = 100;

export function refreshTests(servers: () => Servers): void {
  const tagged: TaggedClient[] = [];
  const newTagged = (server: keyof Servers, options: ConstructorParameters<typeof TaggedClient>[1] = {}) => {
    const client = new TaggedClient(servers()[server], options);
    tagged.push(client);
    return client;
  };
  after(() => {
    for (const client of tagged) {
      client.close();
    }
  });

  describe("proactive refresh (client clock)", () => {
    test("refreshes once the access token is within the 60 s skew of expiry, not before", async () => {
      let clockMs = Date.now();
      const taggedClient = newTagged("main", { now: () => new Date(clockMs) });
      const client = taggedClient.client;
      const first = await client.register(newAccount());
      const expiresMs = first.accessTokenExpiresAt.getTime();

      clockMs = expiresMs - 61_000;
      await client.listSessions();
      assert.equal(client.tokens.tokens?.accessToken, first.accessToken);

      clockMs = expiresMs - 59_000;
      await client.listSessions();
      assert.notEqual(client.tokens.tokens?.accessToken, first.accessToken);
      assert.equal(client.tokens.tokens?.sessionId, first.sessionId);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
    });

    test(`${CONCURRENT_CALLS} concurrent calls past expiry share exactly one Refresh`, async () => {
      let clockMs = Date.now();
      const taggedClient = newTagged("main", { now: () => new Date(clockMs) });
      const first = await taggedClient.client.register(newAccount());
      clockMs = first.accessTokenExpiresAt.getTime() + 1_000;

      const pages = await Promise.all(
        Array.from({ length: CONCURRENT_CALLS }, () => taggedClient.client.listSessions()),
      );

      assert.equal(pages.length, CONCURRENT_CALLS);
      assert.ok(pages.every((page) => page.sessions.some((s) => s.current && s.sessionId === first.sessionId)));
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
    });
  });

  describe("reactive refresh (server says TOKEN_EXPIRED)", () => {
    test("a call rejected as TOKEN_EXPIRED is refreshed and retried once", async () => {
      const frozen = new Date(); // the client's clock stands still: it never refreshes early
      const taggedClient = newTagged("shortTtl", { now: () => frozen });
      const first = await taggedClient.client.register(newAccount());
      await waitUntilPast(first.accessTokenExpiresAt);

      const page = await taggedClient.client.listSessions();

      assert.deepEqual(page.sessions.map((s) => s.sessionId), [first.sessionId]);
      assert.notEqual(taggedClient.client.tokens.tokens?.accessToken, first.accessToken);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
      const calls = await taggedClient.serverLog(LIST_SESSIONS_RPC);
      assert.deepEqual(
        calls.map((line) => `${line.code} ${line.reason}`),
        ["UNAUTHENTICATED TOKEN_EXPIRED", "OK "],
      );
    });

    test(`${CONCURRENT_CALLS} concurrent calls meeting an expired token: one Refresh, all succeed`, async () => {
      const frozen = new Date();
      const taggedClient = newTagged("shortTtl", { now: () => frozen });
      const first = await taggedClient.client.register(newAccount());
      await waitUntilPast(first.accessTokenExpiresAt);

      const results = await Promise.allSettled(
        Array.from({ length: CONCURRENT_CALLS }, () => taggedClient.client.listSessions()),
      );

      const failures = results.filter((r) => r.status === "rejected");
      assert.deepEqual(failures, []);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
      const calls = await taggedClient.serverLog(LIST_SESSIONS_RPC);
      assert.equal(calls.filter((line) => line.reason === "TOKEN_EXPIRED").length, CONCURRENT_CALLS);
      assert.equal(calls.filter((line) => line.code === "OK").length, CONCURRENT_CALLS);
    });
  });

  describe("refresh failure ends the session", () => {
    test("a revoked session: every waiting call gets SessionExpired, the callback runs once, no retry loop", async () => {
      const account = newAccount();
      let clockMs = Date.now();
      const ended: SessionExpired[] = [];
      const taggedClient = newTagged("main", {
        now: () => new Date(clockMs),
        onSessionExpired: (error) => ended.push(error),
      });
      const mine = await taggedClient.client.register(account);
      const other = newTagged("main").client;
      await other.login(account);
      await other.revokeSession(mine.sessionId, "test: revoked elsewhere");
      clockMs = mine.accessTokenExpiresAt.getTime() + 1_000; // every call needs a refresh now

      const results = await Promise.allSettled(
        Array.from({ length: CONCURRENT_CALLS }, () => taggedClient.client.listSessions()),
      );
      const later = await rejection(taggedClient.client.listSessions());

      assert.equal(ended.length, 1);
      assert.equal(ended[0]?.reason, "SESSION_REVOKED");
      for (const result of results) {
        assert.equal(result.status, "rejected");
        assert.ok(result.status === "rejected" && result.reason instanceof SessionExpired, String(result));
      }
      assert.ok(later instanceof SessionExpired);
      assert.equal(ended.length, 1);
      assert.equal(taggedClient.client.tokens.tokens, undefined);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 1);
    });

    test("a call answered SESSION_REVOKED ends the session: callback once, later calls fail without an RPC", async () => {
      const account = newAccount();
      const ended: SessionExpired[] = [];
      const taggedClient = newTagged("main", { onSessionExpired: (error) => ended.push(error) });
      const mine = await taggedClient.client.register(account);
      const other = newTagged("main").client;
      await other.login(account);
      await other.revokeSession(mine.sessionId);

      const first = await rejection(taggedClient.client.listSessions());
      const second = await rejection(taggedClient.client.listSessions());

      assert.ok(first instanceof SessionRevoked, String(first));
      assert.ok(first instanceof SessionExpired);
      assert.equal(second, first);
      assert.deepEqual(ended, [first]);
      assert.equal(taggedClient.client.tokens.tokens, undefined);
      assert.equal(await taggedClient.serverCount(LIST_SESSIONS_RPC), 1);
      assert.equal(await taggedClient.serverCount(REFRESH_RPC), 0);
    });

    test("a replayed refresh token: SessionExpired with reason REFRESH_TOKEN_REUSED", async () => {
      // Two holders of one session (say, a copied token store). The server under test has
      // no refresh grace period, so the stale copy's refresh is reuse at once.
      const ended: SessionExpired[] = [];
      const original = newTagged("shortTtl").client;
      const tokens = await original.register(newAccount());
      const copy = newTagged("shortTtl", { tokens, onSessionExpired: (error) => ended.push(error) }).client;
      await original.refresh();

      const error = await rejection(copy.refresh());

      assert.ok(error instanceof SessionExpired, String(error));
      assert.equal(error.reason, "REFRESH_TOKEN_REUSED");
      assert.ok(error instanceof RefreshTokenReused);
      assert.deepEqual(ended, [error]);
      const originalError = await rejection(original.refresh());
      assert.ok(originalError instanceof SessionExpired, String(originalError));
      assert.equal(originalError.reason, "SESSION_REVOKED");
    });
  });
}
