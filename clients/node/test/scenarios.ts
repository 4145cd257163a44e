// The TokenManager scenario table (clients/testdata/token_manager_scenarios.json), run
// through AuthClient against the live servers. The Python client's suite runs the same table
// (tests/clients/test_token_manager_scenarios.py); the table's "about" says what each step and
// check means.
//
// The client's clock is injected and moves only by set_clock. The servers run on the wall
// clock, so expire_on_server waits (bounded) until the access token's expiry has passed; the
// scenarios that do it name the short-lived server's settings.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import type { Interceptor } from "@connectrpc/connect";
import { AuthClient } from "../src/client.js";
import { AuthsvcError, type SessionExpired } from "../src/errors.js";
import type { Tokens } from "../src/token_manager.js";
import {
  newAccount,
  newTag,
  SERVER_SETTINGS,
  TaggedClient,
  waitUntilPast,
  type AuthsvcServer,
  type Servers,
} from "./harness.js";

type Action = { do: string; expect?: Expectation; start?: string; [field: string]: unknown };
type Step = Action | { check: Check };
type Expectation = { ok?: number; error?: string; session?: string };
type Check = {
  rpcs?: Record<string, number>;
  current?: string | null;
  rotated?: boolean;
  ended?: string[];
  persisted?: "current" | null;
};

interface Scenario {
  name: string;
  description: string;
  server?: Record<string, string>;
  client?: { refresh_skew_s?: number };
  steps: Step[];
}

const RPC_PREFIX = "/authsvc.v1.AuthService/";
/** A bound on waiting for held refreshes, not a timing assertion. */
const HELD_TIMEOUT_MS = 10_000;

/** clients/testdata/token_manager_scenarios.json, found above this file (src or build). */
function readTable(): Scenario[] {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, "testdata", "token_manager_scenarios.json");
    if (existsSync(candidate)) {
      return (JSON.parse(readFileSync(candidate, "utf8")) as { scenarios: Scenario[] }).scenarios;
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error("no testdata/token_manager_scenarios.json above the tests");
    }
    dir = parent;
  }
}

/** The shared server whose settings are exactly the scenario's. */
function serverFor(scenario: Scenario): keyof Servers {
  const wanted = JSON.stringify(Object.entries(scenario.server ?? {}).sort());
  const name = (Object.keys(SERVER_SETTINGS) as (keyof Servers)[]).find(
    (key) => JSON.stringify(Object.entries(SERVER_SETTINGS[key]).sort()) === wanted,
  );
  assert.ok(name !== undefined, `no shared server runs with ${wanted}`);
  return name;
}

/** Holds Refresh answers (success or failure, after the server sent them) until released. */
class RefreshGate {
  held = 0;
  #isHolding = false;
  /** One per answer held and not yet released, oldest first. */
  readonly #gates: (() => void)[] = [];
  readonly #arrivals = new Set<() => void>();

  readonly interceptor: Interceptor = (next) => async (req) => {
    if (!this.#isHolding || req.method.name !== "Refresh") {
      return next(req);
    }
    const outcome = await next(req).then(
      (response) => ({ response }),
      (error: unknown) => ({ error }),
    );
    if (this.#isHolding) {
      await new Promise<void>((resolve) => {
        this.#gates.push(resolve);
        this.held++;
        for (const arrived of this.#arrivals) {
          arrived();
        }
      });
    }
    if ("error" in outcome) {
      throw outcome.error;
    }
    return outcome.response;
  };

  hold(): void {
    this.#isHolding = true;
  }

  /** Let the oldest `count` held answers go on; all, and hold no more, without one. */
  release(count?: number): void {
    if (count === undefined) {
      this.#isHolding = false;
    }
    const released = count ?? this.#gates.length;
    assert.ok(released <= this.#gates.length, `${released} to release, ${this.#gates.length} held`);
    for (const resolve of this.#gates.splice(0, released)) {
      resolve();
    }
  }

  async waitHeld(count: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#arrivals.delete(check);
        reject(new Error(`${this.held} of ${count} refreshes held after ${HELD_TIMEOUT_MS} ms`));
      }, HELD_TIMEOUT_MS);
      const check = () => {
        if (this.held >= count) {
          clearTimeout(timer);
          this.#arrivals.delete(check);
          resolve();
        }
      };
      this.#arrivals.add(check);
      check();
    });
  }
}

/** Interprets one scenario's steps against a server, with one client at a time. */
class Runner {
  readonly #scenario: Scenario;
  readonly #server: AuthsvcServer;
  readonly #gate = new RefreshGate();
  readonly #tag = newTag();
  readonly #account = newAccount();
  readonly #sessions = new Map<string, Tokens>();
  readonly #started = new Map<string, Promise<unknown[]>>();
  readonly #clients: TaggedClient[] = [];
  readonly #ended: string[] = [];
  #clockMs = Date.now();
  #signedIn: Tokens | undefined;
  /** What the app persisted: the last pair onTokens gave, gone when onSessionExpired ran. */
  #persisted: Tokens | undefined;
  #other: AuthClient | undefined;
  #client: TaggedClient;

  constructor(scenario: Scenario, server: AuthsvcServer) {
    this.#scenario = scenario;
    this.#server = server;
    this.#client = this.#newClient();
  }

  #newClient(): TaggedClient {
    const skewS = this.#scenario.client?.refresh_skew_s;
    const client = new TaggedClient(
      this.#server,
      {
        now: () => new Date(this.#clockMs),
        ...(skewS !== undefined && { refreshSkewMs: skewS * 1000 }),
        onTokens: (tokens) => {
          this.#persisted = tokens;
        },
        onSessionExpired: (error: SessionExpired) => {
          this.#persisted = undefined;
          this.#ended.push(error.reason);
        },
        ...(this.#persisted !== undefined && { tokens: this.#persisted }),
        interceptors: [this.#gate.interceptor],
      },
      this.#tag,
    );
    this.#clients.push(client);
    return client;
  }

  close(): void {
    this.#gate.release();
    this.#other?.close();
    for (const client of this.#clients) {
      client.close();
    }
  }

  get #tokens(): Tokens | undefined {
    return this.#client.client.tokens.tokens;
  }

  #current(): Tokens {
    const tokens = this.#tokens;
    assert.ok(tokens !== undefined, "the step needs a signed-in client");
    return tokens;
  }

  #label(tokens: Tokens | undefined): string | null {
    if (tokens === undefined) {
      return null;
    }
    const label = [...this.#sessions].find(([, signed]) => signed.sessionId === tokens.sessionId)?.[0];
    assert.ok(label !== undefined, `tokens of a session no step signed in: ${tokens.sessionId}`);
    return label;
  }

  async run(step: Step): Promise<void> {
    if (!("do" in step)) {
      await this.#check(step.check);
      return;
    }
    const client = this.#client.client;
    switch (step.do) {
      case "sign_in": {
        const first = this.#sessions.size === 0;
        const tokens = first ? await client.register(this.#account) : await client.login(this.#account);
        this.#sessions.set(String(step["session"]), tokens);
        this.#signedIn = tokens;
        return;
      }
      case "set_clock":
        this.#clockMs = this.#current().accessTokenExpiresAt.getTime() + Number(step["to_expiry_s"]) * 1000;
        return;
      case "expire_on_server":
        await waitUntilPast(this.#current().accessTokenExpiresAt);
        return;
      case "revoke": {
        const session = this.#sessions.get(String(step["session"]));
        assert.ok(session !== undefined, `no session ${String(step["session"])}`);
        if (this.#other === undefined) {
          this.#other = new AuthClient({ baseUrl: this.#server.baseUrl });
          await this.#other.login(this.#account);
        }
        await this.#other.revokeSession(session.sessionId);
        return;
      }
      case "steal_refresh_token": {
        const thief = new AuthClient({ baseUrl: this.#server.baseUrl, tokens: this.#current() });
        try {
          await thief.refresh();
        } finally {
          thief.close();
        }
        return;
      }
      case "hold_refreshes":
        this.#gate.hold();
        return;
      case "release_refreshes":
        this.#gate.release(step["count"] === undefined ? undefined : Number(step["count"]));
        return;
      case "await_held":
        await this.#gate.waitHeld(Number(step["count"]));
        return;
      case "call": {
        const count = Number(step["count"] ?? 1);
        await this.#act(step, () =>
          Promise.all(Array.from({ length: count }, () => client.listSessions().catch(asAuthsvcError))),
        );
        return;
      }
      case "refresh":
        await this.#act(step, async () => [await client.refresh().catch(asAuthsvcError)]);
        return;
      case "finish": {
        const started = this.#started.get(String(step["id"]));
        assert.ok(started !== undefined, `nothing started as ${String(step["id"])}`);
        this.#started.delete(String(step["id"]));
        this.#expect(step.expect, await started);
        return;
      }
      case "restart_client":
        this.#client.close();
        this.#client = this.#newClient();
        return;
      default:
        assert.fail(`unknown step ${JSON.stringify(step)}`);
    }
  }

  async #act(step: { expect?: Expectation; start?: string }, act: () => Promise<unknown[]>): Promise<void> {
    if (step.start !== undefined) {
      assert.equal(step.expect, undefined, "a started step's outcome is expected at its finish");
      const outcome = act();
      outcome.catch(() => undefined); // read at its finish step
      this.#started.set(step.start, outcome);
      // Let it run up to its first wait, as a caller that went ahead would.
      await new Promise((resolve) => setImmediate(resolve));
      return;
    }
    this.#expect(step.expect, await act());
  }

  #expect(expect: Expectation | undefined, outcomes: unknown[]): void {
    if (expect === undefined) {
      return;
    }
    if (expect.ok !== undefined) {
      assert.deepEqual(
        outcomes.filter((o) => o instanceof Error),
        [],
      );
      assert.equal(outcomes.length, expect.ok);
    } else if (expect.error !== undefined) {
      const reasons = outcomes.map((o) => (o instanceof AuthsvcError ? o.reason : String(o)));
      assert.deepEqual(reasons, Array<string>(outcomes.length).fill(expect.error));
    } else if (expect.session !== undefined) {
      assert.equal(outcomes.length, 1);
      const [tokens] = outcomes;
      assert.ok(!(tokens instanceof Error), String(tokens));
      assert.equal(this.#label(tokens as Tokens), expect.session);
    } else {
      assert.fail(`unknown expectation ${JSON.stringify(expect)}`);
    }
  }

  async #check(check: Check): Promise<void> {
    const current = this.#tokens;
    for (const [key, want] of Object.entries(check)) {
      switch (key) {
        case "rpcs": {
          const counted: Record<string, number> = {};
          for (const method of Object.keys(want as Record<string, number>)) {
            counted[method] = await this.#client.serverCount(RPC_PREFIX + method);
          }
          assert.deepEqual(counted, want);
          break;
        }
        case "current":
          assert.equal(this.#label(current), want);
          break;
        case "rotated":
          assert.ok(current !== undefined && this.#signedIn !== undefined);
          assert.equal(current.accessToken !== this.#signedIn.accessToken, want);
          break;
        case "ended":
          assert.deepEqual(this.#ended, want);
          break;
        case "persisted":
          assert.ok(want === "current" || want === null, `unknown persisted ${String(want)}`);
          assert.deepEqual(this.#persisted, want === "current" ? current : undefined);
          break;
        default:
          assert.fail(`unknown check ${key}`);
      }
    }
  }
}

function asAuthsvcError(error: unknown): AuthsvcError {
  if (error instanceof AuthsvcError) {
    return error;
  }
  throw error;
}

export function scenarioTests(servers: () => Servers): void {
  const scenarios = readTable();
  const ran = new Set<string>();
  const runners: Runner[] = [];
  after(() => {
    for (const runner of runners) {
      runner.close();
    }
  });

  describe("token manager scenarios (clients/testdata/token_manager_scenarios.json)", () => {
    for (const scenario of scenarios) {
      test(scenario.name, async () => {
        ran.add(scenario.name);
        const runner = new Runner(scenario, servers()[serverFor(scenario)]);
        runners.push(runner);
        for (const [number, step] of scenario.steps.entries()) {
          try {
            await runner.run(step);
          } catch (error) {
            throw new Error(`step ${number} ${JSON.stringify(step)}: ${String(error)}`, { cause: error });
          }
        }
      });
    }

    test("every scenario in the table ran", () => {
      assert.deepEqual([...ran].sort(), scenarios.map((s) => s.name).sort());
    });
  });
}
