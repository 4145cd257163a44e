// TokenVerifier against the claims table the server and the Python client are tested with
// (clients/testdata/access_token_claims.json): tokens signed with the live server's own key,
// keys fetched from the live server, time fixed by the verifier's injected clock.

import assert from "node:assert/strict";
import { createPrivateKey, randomUUID, sign } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { AuthClient } from "../src/client.js";
import { AuthsvcError } from "../src/errors.js";
import { AssuranceLevel } from "../src/second_factors.js";
import { DEFAULT_LEEWAY_MS, TokenVerifier, type Principal } from "../src/verifier.js";
import { activeSigningKey, newAccount, type Servers, type SigningKey } from "./harness.js";

interface ClaimsCase {
  name: string;
  times?: Record<string, number>;
  claims?: Record<string, unknown>;
  remove?: string[];
  verdict: string;
  /** What both clients' verifiers say of a refusal. */
  message?: string;
  /** What every checker reports of an accepted token: [AssuranceLevel name, amr]. */
  assurance?: [string, string[]];
}

interface ClaimsTable {
  clock_skew_seconds: number;
  cases: ClaimsCase[];
}

const ACCEPTED = "accepted";

/** clients/testdata/access_token_claims.json, found above this file (src or build). */
function readTable(): ClaimsTable {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "testdata", "access_token_claims.json");
    if (existsSync(candidate)) {
      return JSON.parse(readFileSync(candidate, "utf8")) as ClaimsTable;
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error("no testdata/access_token_claims.json above the tests");
    }
    dir = parent;
  }
}

function b64urlJson(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** The case's claims over a minted token's, signed as the server signs (its key, kid, typ). */
function signCase(key: SigningKey, nowSeconds: number, entry: ClaimsCase): string {
  const claims: Record<string, unknown> = {
    iss: "authsvc",
    aud: "authsvc",
    sub: randomUUID(),
    sid: randomUUID(),
    jti: randomUUID(),
    iat: nowSeconds,
    exp: nowSeconds + 900,
    // A password session's, as the server mints them.
    auth_time: nowSeconds,
    acr: "aal1",
    amr: ["pwd"],
  };
  for (const [name, offset] of Object.entries(entry.times ?? {})) {
    claims[name] = nowSeconds + offset;
  }
  Object.assign(claims, entry.claims ?? {});
  for (const name of entry.remove ?? []) {
    delete claims[name];
  }
  const header = { alg: key.algorithm, kid: key.kid, typ: "at+jwt" };
  const signingInput = `${b64urlJson(header)}.${b64urlJson(claims)}`;
  const privateKey = createPrivateKey(key.private_key_pem);
  const signature =
    key.algorithm === "EdDSA"
      ? sign(null, Buffer.from(signingInput), privateKey)
      : sign("sha256", Buffer.from(signingInput), { key: privateKey, dsaEncoding: "ieee-p1363" });
  return `${signingInput}.${signature.toString("base64url")}`;
}

/** "accepted" with the principal's [level, amr], or the refusal's reason and message. */
async function verdictOf(verifier: TokenVerifier, token: string): Promise<[string, unknown?]> {
  let principal: Principal;
  try {
    principal = await verifier.verify(token);
  } catch (error) {
    if (error instanceof AuthsvcError) {
      return [error.reason, error.rawMessage];
    }
    throw error;
  }
  return [ACCEPTED, [AssuranceLevel[principal.assuranceLevel], principal.amr]];
}

export function claimsTests(servers: () => Servers): void {
  describe("TokenVerifier and the shared claims table", () => {
    const table = readTable();
    // Whole seconds, like JWT times, so the table's boundaries fall exactly.
    const nowSeconds = Math.floor(Date.now() / 1000);
    let client: AuthClient | undefined;
    let key: SigningKey | undefined;
    let verifier: TokenVerifier | undefined;

    before(async () => {
      client = new AuthClient({ baseUrl: servers().main.baseUrl });
      key = await activeSigningKey(servers().main.dataDir);
      verifier = new TokenVerifier(client, { now: () => new Date(nowSeconds * 1000) });
    });
    after(() => client?.close());

    test("the default leeway is the table's clock skew (the server's AUTHSVC_CLOCK_SKEW)", () => {
      assert.equal(DEFAULT_LEEWAY_MS, table.clock_skew_seconds * 1000);
    });

    test("a token the server minted verifies, with its user and session", async () => {
      const tokens = await client!.register(newAccount());

      const principal = await new TokenVerifier(client!).verify(tokens.accessToken);

      assert.deepEqual([principal.userId, principal.sessionId], [tokens.userId, tokens.sessionId]);
    });

    for (const entry of table.cases) {
      test(`${entry.name}: ${entry.verdict}`, async () => {
        const token = signCase(key!, nowSeconds, entry);

        const [verdict, detail] = await verdictOf(verifier!, token);

        assert.deepEqual([verdict, verdict === ACCEPTED ? undefined : detail], [entry.verdict, entry.message]);
        if (entry.assurance !== undefined) {
          assert.deepEqual(detail, entry.assurance);
        }
      });
    }
  });
}
