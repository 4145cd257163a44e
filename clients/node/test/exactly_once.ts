// Exactly-once Refresh: the client sends an idempotency key with every rotation and keeps it
// across its own retries (the service config's and the token manager's), through a real TCP
// proxy that loses the server's answer after the rotation committed. The server here has no
// refresh grace period, so a retry with any other key would be REFRESH_TOKEN_REUSED.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import { AuthClient } from "../src/client.js";
import { Unavailable } from "../src/errors.js";
import { SERVICE_CONFIG_JSON } from "../src/gen/service_config.js";
import { SERVICE_CONFIG } from "../src/retry.js";
import { DroppingProxy } from "./dropping_proxy.js";
import { closedAfterSuite, newAccount, REFRESH_RPC, rejection, type AuthsvcServer, type Servers } from "./harness.js";

// build/test/ -> clients/service_config.json, the one declaration.
const PUBLISHED = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "service_config.json");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A client through `proxy` that tags its calls and records each Refresh's key. */
class ProxiedClient {
  readonly client: AuthClient;
  readonly keys: string[] = [];
  readonly #tag = `x${randomUUID()}`;
  readonly #server: AuthsvcServer;

  constructor(server: AuthsvcServer, proxy: DroppingProxy) {
    this.#server = server;
    const observe: Interceptor = (next) => async (req) => {
      if (!req.header.has("x-request-id")) {
        req.header.set("x-request-id", `${this.#tag}-${randomUUID()}`);
      }
      if (req.method.name === "Refresh" && !req.stream) {
        this.keys.push((req.message as unknown as { idempotencyKey: string }).idempotencyKey);
      }
      return next(req);
    };
    this.client = new AuthClient({ baseUrl: proxy.baseUrl, interceptors: [observe] });
  }

  /** The result codes the server logged for this client's Refresh calls, in order. */
  async refreshCodes(): Promise<string[]> {
    const marker = `${this.#tag}-marker-${randomUUID()}`;
    await this.client.getJwks({ headers: { "x-request-id": marker } });
    await this.#server.waitForRpc((line) => line.request_id === marker);
    return this.#server.rpcLog
      .filter((line) => line.rpc === REFRESH_RPC && line.request_id?.startsWith(`${this.#tag}-`) === true)
      .map((line) => line.code);
  }

  close(): void {
    this.client.close();
  }
}

export function exactlyOnceTests(servers: () => Servers): void {
  const newProxy = closedAfterSuite((proxy: DroppingProxy) => proxy);
  const newClient = closedAfterSuite((server: AuthsvcServer, proxy: DroppingProxy) => new ProxiedClient(server, proxy));

  async function signedIn(): Promise<{ proxied: ProxiedClient; proxy: DroppingProxy }> {
    const server = servers().shortTtl;
    assert.ok(server.port !== undefined);
    const proxy = newProxy(await DroppingProxy.start(server.port));
    const proxied = newClient(server, proxy);
    await proxied.client.register(newAccount());
    return { proxied, proxy };
  }

  describe("exactly-once refresh", () => {
    test("the default service config is the published file", () => {
      const published = readFileSync(PUBLISHED, "utf8");
      assert.equal(SERVICE_CONFIG_JSON, published);
      assert.deepEqual(SERVICE_CONFIG, JSON.parse(published));
    });

    test("a refresh whose answer was lost is retried with its key and ends with a working pair", async () => {
      const { proxied, proxy } = await signedIn();
      proxy.dropNextAnswers(1);

      const tokens = await proxied.client.refresh();

      assert.equal(proxy.dropped, 1);
      assert.deepEqual(await proxied.refreshCodes(), ["OK", "OK"]);
      assert.equal(proxied.keys.length, 1); // one call; its two attempts sent the same request
      assert.match(proxied.keys[0] ?? "", UUID);
      assert.equal(proxied.client.tokens.tokens, tokens);
      const next = await proxied.client.refresh();
      assert.equal(next.sessionId, tokens.sessionId);
      assert.notEqual(proxied.keys[1], proxied.keys[0]);
    });

    test("the token manager keeps the key of a rotation whose every attempt was lost", async () => {
      const { proxied, proxy } = await signedIn();
      proxy.dropNextAnswers(4);
      const error = await rejection(proxied.client.refresh());
      assert.ok(error instanceof Unavailable, String(error));
      assert.equal(proxy.dropped, 4);

      const tokens = await proxied.client.refresh();

      assert.equal(proxied.keys.length, 2);
      assert.equal(proxied.keys[1], proxied.keys[0]);
      assert.deepEqual(await proxied.refreshCodes(), ["OK", "OK", "OK", "OK", "OK"]);
      assert.equal((await proxied.client.listSessions()).sessions[0]?.sessionId, tokens.sessionId);
    });

    test("a key of the caller's own is sent", async () => {
      const { proxied } = await signedIn();
      const key = `caller-${randomUUID()}`;

      await proxied.client.refresh(key);

      assert.deepEqual(proxied.keys, [key]);
    });
  });
}
