// Automatic refresh against the live server, beyond the scenario table that both clients run
// (scenarios.ts, clients/testdata/token_manager_scenarios.json): what a refresh-token replay
// does to both holders of the session.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { RefreshTokenReused, SessionExpired } from "../src/errors.js";
import { closedAfterSuite, newAccount, rejection, TaggedClient, type Servers } from "./harness.js";

export function refreshTests(servers: () => Servers): void {
  const newTagged = closedAfterSuite(
    (server: keyof Servers, options: ConstructorParameters<typeof TaggedClient>[1] = {}) =>
      new TaggedClient(servers()[server], options),
  );

  describe("refresh failure ends the session", () => {
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
