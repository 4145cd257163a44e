// TokenVerifier's refusals outside the shared claims table: the token type, the length bound,
// forged signatures and algorithms, and the throttled JWKS refetch for unknown `kid`s. Tokens
// are signed with the live server's own key (or a stranger's), keys come from the live server.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { generateKeyPair, importPKCS8, SignJWT, type CryptoKey, type JWTHeaderParameters } from "jose";
import { AuthClient } from "../src/client.js";
import { AuthsvcError, Unavailable } from "../src/errors.js";
import { DEFAULT_JWKS_REFETCH_INTERVAL_MS, TokenVerifier } from "../src/verifier.js";
import {
  activeSigningKey,
  AuthsvcServer,
  newAccount,
  rejection,
  TaggedClient,
  type Servers,
  type SigningKey,
} from "./harness.js";

const GET_JWKS = "/authsvc.v1.AuthService/GetJwks";

/** A token with what the server mints, under `header` (kid and alg default to `key`'s). */
async function signed(
  privateKey: CryptoKey,
  header: Partial<JWTHeaderParameters> & { alg: string },
  claims: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT({ sid: randomUUID(), jti: randomUUID(), ...claims })
    .setProtectedHeader({ typ: "at+jwt", ...header })
    .setIssuer("authsvc")
    .setAudience("authsvc")
    .setSubject(randomUUID())
    .setIssuedAt()
    .setExpirationTime("15m")
    .sign(privateKey);
}

/** The refusal's message ("accepted" if there was none). */
async function refusalOf(verifier: TokenVerifier, token: string): Promise<string> {
  try {
    await verifier.verify(token);
  } catch (error) {
    assert.ok(error instanceof AuthsvcError, String(error));
    return `${error.reason}: ${error.rawMessage}`;
  }
  return "accepted";
}

export function verifierTests(servers: () => Servers): void {
  describe("TokenVerifier refusals beyond the claims table", () => {
    let serverKey: SigningKey;
    let ownKey: CryptoKey;
    let strangerEd25519: CryptoKey;
    let strangerP256: CryptoKey;
    const tagged: TaggedClient[] = [];
    const newClient = (): TaggedClient => {
      const client = new TaggedClient(servers().main);
      tagged.push(client);
      return client;
    };

    before(async () => {
      serverKey = await activeSigningKey(servers().main.dataDir);
      ownKey = await importPKCS8(serverKey.private_key_pem, serverKey.algorithm);
      strangerEd25519 = (await generateKeyPair("EdDSA", { crv: "Ed25519" })).privateKey;
      strangerP256 = (await generateKeyPair("ES256")).privateKey;
    });
    after(() => {
      for (const client of tagged) {
        client.close();
      }
    });

    const forgeries: { name: string; token: () => Promise<string>; refusal: string }[] = [
      {
        name: "a JWT of another type (an ID token) signed with the server's key",
        token: () => signed(ownKey, { alg: serverKey.algorithm, kid: serverKey.kid, typ: "JWT" }),
        refusal: "TOKEN_INVALID: not an access token (typ must be at+jwt)",
      },
      {
        name: "a token longer than any authsvc mints",
        token: async () => `${await signed(ownKey, { alg: serverKey.algorithm, kid: serverKey.kid })}${"A".repeat(8192)}`,
        refusal: "TOKEN_INVALID: access token is too long",
      },
      {
        name: "three dots' worth of garbage",
        token: async () => "not.a.jwt",
        refusal: "TOKEN_INVALID: access token is malformed",
      },
      {
        name: "another key's signature under the server's kid",
        token: () => signed(strangerEd25519, { alg: "EdDSA", kid: serverKey.kid }),
        refusal: "TOKEN_INVALID: access token signature is invalid",
      },
      {
        name: "an algorithm other than the one the server's key declares",
        token: () => signed(strangerP256, { alg: "ES256", kid: serverKey.kid }),
        refusal: "TOKEN_INVALID: access token signature is invalid",
      },
      {
        name: "alg none",
        token: async () => {
          const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
          const claims = { iss: "authsvc", aud: "authsvc", sub: randomUUID(), sid: randomUUID(), jti: randomUUID() };
          return `${part({ alg: "none", kid: serverKey.kid, typ: "at+jwt" })}.${part(claims)}.`;
        },
        refusal: "TOKEN_INVALID: access token signature is invalid",
      },
      {
        name: "a kid the server never published",
        token: () => signed(strangerEd25519, { alg: "EdDSA", kid: `forged-${randomUUID()}` }),
        refusal: "TOKEN_INVALID: access token is signed by an unknown key",
      },
    ];
    for (const forgery of forgeries) {
      test(`refuses ${forgery.name}`, async () => {
        const verifier = new TokenVerifier(newClient().client);

        const refusal = await refusalOf(verifier, await forgery.token());

        assert.equal(refusal, forgery.refusal);
      });
    }

    test("unknown kids refetch the JWKS at most once per refetch interval", async () => {
      const client = newClient();
      let nowMs = Date.now();
      const verifier = new TokenVerifier(client.client, { now: () => new Date(nowMs) });
      const forged = () => signed(strangerEd25519, { alg: "EdDSA", kid: `forged-${randomUUID()}` });
      const fetches = async () =>
        (await client.serverLog(GET_JWKS)).filter((line) => !line.request_id?.includes("-marker-")).length;

      // The first fetch, then one refetch for an unknown kid; the next ones wait.
      for (let attempt = 0; attempt < 4; attempt++) {
        await verifier.verify(await forged()).catch(() => undefined);
      }
      const withinInterval = await fetches();
      nowMs += DEFAULT_JWKS_REFETCH_INTERVAL_MS;
      await verifier.verify(await forged()).catch(() => undefined);

      assert.deepEqual([withinInterval, await fetches()], [2, 3]);
    });
  });

  describe("TokenVerifier with jwksUrl: the keys from the server's HTTP port", () => {
    let httpReplica: AuthsvcServer | undefined;
    let client: AuthClient | undefined;

    before(async () => {
      httpReplica = await AuthsvcServer.start(servers().main.dataDir, { AUTHSVC_HTTP_PORT: "0" });
      client = new AuthClient({ baseUrl: servers().main.baseUrl });
    });
    after(async () => {
      client?.close();
      await httpReplica?.stop();
    });

    test("a token the server minted verifies; one under a kid it never published is refused", async () => {
      const jwksUrl = `${httpReplica!.httpBaseUrl}/.well-known/jwks.json`;
      // No GetJwks: every key comes from the URL.
      const verifier = new TokenVerifier({ getJwks: () => assert.fail("GetJwks called") }, { jwksUrl });
      const tokens = await client!.register(newAccount());
      const stranger = (await generateKeyPair("EdDSA", { crv: "Ed25519" })).privateKey;

      const principal = await verifier.verify(tokens.accessToken);
      const forged = await refusalOf(verifier, await signed(stranger, { alg: "EdDSA", kid: `forged-${randomUUID()}` }));

      assert.equal(principal.sessionId, tokens.sessionId);
      assert.equal(forged, "TOKEN_INVALID: access token is signed by an unknown key");
    });

    test("a JWKS URL that does not answer is Unavailable, not a verdict on the token", async () => {
      const tokens = await client!.register(newAccount());
      const nothingThere = `${httpReplica!.httpBaseUrl}/no-such-path/jwks.json`;

      const error = await rejection(new TokenVerifier(client!, { jwksUrl: nothingThere }).verify(tokens.accessToken));

      assert.ok(error instanceof Unavailable, String(error));
    });
  });
}
