// The revocation feed from the client's side, on live replicas of one database: the
// service key, watchRevocations, and the subscribed TokenVerifier (revoked through one
// replica and refused by a verifier following another, catching up after its server
// restarts, failing closed when its feed is cut, and leaving nothing running once closed).
// Nothing here waits on a clock: each step waits for the feed event that says it happened.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { inspect } from "node:util";
import { after, before, describe, test } from "node:test";
import { AuthClient, type AuthClientOptions, type FeedEvent } from "../src/client.js";
import {
  RevocationFeedStale,
  ServiceCredentialsRequired,
  SessionRevoked,
  type AuthsvcError,
} from "../src/errors.js";
import { SessionEndReason } from "../src/gen/authsvc/v1/auth_service_pb.js";
import { RevocationFeed, type FeedStatus } from "../src/revocations.js";
import { TokenVerifier, type RevocationOptions, type RevocationSource } from "../src/verifier.js";
import {
  AuthsvcServer,
  closedAfterSuite,
  mintServiceKey,
  newAccount,
  rejection,
  TaggedClient,
  type Servers,
  type ServiceKey,
} from "./harness.js";

const VALIDATE_TOKEN = "/authsvc.v1.AuthService/ValidateToken";
/** Bounds each wait for a feed event; only a hang reaches it. */
const EVENT_TIMEOUT_MS = 30_000;
/** Short enough that the cut-feed tests end soon, several heartbeat intervals (1 s) long. */
const STALE_AFTER_MS = 3_000;

/** Every status a verifier's feed reported, and a way to wait for the next one that matters. */
class FeedLog {
  readonly statuses: FeedStatus[] = [];
  readonly #waiters = new Set<() => void>();

  readonly onEvent = (status: FeedStatus): void => {
    this.statuses.push(status);
    for (const wake of this.#waiters) {
      wake();
    }
  };

  /** Where "from now on" starts, for waitFor. */
  mark(): number {
    return this.statuses.length;
  }

  /** The first status from `since` on that `matches`; fails after EVENT_TIMEOUT_MS. */
  async waitFor(what: string, matches: (status: FeedStatus) => boolean, since = 0): Promise<FeedStatus> {
    const found = () => this.statuses.slice(since).find(matches);
    return new Promise((resolve, reject) => {
      const check = () => {
        const status = found();
        if (status !== undefined) {
          finish();
          resolve(status);
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no ${what} within ${EVENT_TIMEOUT_MS} ms; saw ${inspect(this.statuses.map((s) => s.type))}`));
      }, EVENT_TIMEOUT_MS);
      this.#waiters.add(check);
      check();
    });
  }

  current(since = 0): Promise<FeedStatus> {
    return this.waitFor("current feed", (status) => status.type === "current", since);
  }

  stale(since = 0): Promise<FeedStatus> {
    return this.waitFor("stale feed", (status) => status.type === "stale", since);
  }

  revocationOf(sessionId: string, since = 0): Promise<FeedStatus> {
    return this.waitFor(
      `revocation of ${sessionId}`,
      (status) => status.type === "revocation" && status.revocation.sessionId === sessionId,
      since,
    );
  }

  disconnected(since = 0): Promise<FeedStatus> {
    return this.waitFor("disconnection", (status) => status.type === "disconnected", since);
  }
}

/** The class of the error `promise` rejects with, and its reason. */
async function refusal(promise: Promise<unknown>): Promise<[string, string]> {
  const error = (await rejection(promise)) as AuthsvcError;
  return [error.constructor.name, error.reason];
}

/** The events of `stream` up to and including its first heartbeat. */
async function untilHeartbeat(stream: AsyncIterable<FeedEvent>): Promise<FeedEvent[]> {
  const events: FeedEvent[] = [];
  for await (const event of stream) {
    events.push(event);
    if (event.kind === "heartbeat") {
      break;
    }
  }
  return events;
}

export function revocationTests(servers: () => Servers): void {
  describe("the revocation feed: service key, watchRevocations, subscribed TokenVerifier", () => {
    let service: ServiceKey;
    /** Replica B: accepts the service key; the verifiers follow it. */
    let replicaB: AuthsvcServer;
    const started: AuthsvcServer[] = [];
    const verifiers: TokenVerifier[] = [];
    const newClient = closedAfterSuite(
      (server: AuthsvcServer, options: Partial<AuthClientOptions> = {}) =>
        new AuthClient({ ...options, baseUrl: server.baseUrl }),
    );
    const taggedClient = closedAfterSuite(
      (server: AuthsvcServer, options: Partial<AuthClientOptions>) => new TaggedClient(server, options),
    );
    const serviceClient = (server: AuthsvcServer) => newClient(server, { serviceKey: service.key });

    /** Another replica on the shared database, stopped after the suite. */
    const startReplica = async (env: Record<string, string> = {}, port?: number): Promise<AuthsvcServer> => {
      const server = await AuthsvcServer.start(
        servers().main.dataDir,
        { AUTHSVC_SERVICE_KEYS: service.entry, ...env },
        { serviceKey: service.key, ...(port !== undefined && { port }) },
      );
      started.push(server);
      return server;
    };

    /** A subscribed verifier, closed after the suite, and the log of its feed. */
    const subscribed = (source: RevocationSource, options: RevocationOptions = {}): [TokenVerifier, FeedLog] => {
      const log = new FeedLog();
      const verifier = new TokenVerifier(source, { revocations: { ...options, onEvent: log.onEvent } });
      verifiers.push(verifier);
      return [verifier, log];
    };

    /** A user signed in through the main replica (A): their client and access token. */
    const signedIn = async (): Promise<{ user: AuthClient; accessToken: string; sessionId: string }> => {
      const user = newClient(servers().main);
      const tokens = await user.register(newAccount());
      return { user, accessToken: tokens.accessToken, sessionId: tokens.sessionId };
    };

    before(async () => {
      service = await mintServiceKey("node-tests");
      replicaB = await startReplica();
    });
    after(async () => {
      for (const verifier of verifiers) {
        await verifier.close();
      }
      for (const server of started) {
        await server.stop();
      }
    });

    test("watchRevocations without a service key is refused SERVICE_CREDENTIALS_REQUIRED", async () => {
      const client = newClient(replicaB);

      const error = await refusal(untilHeartbeat(client.watchRevocations()));

      assert.deepEqual(error, [ServiceCredentialsRequired.name, "SERVICE_CREDENTIALS_REQUIRED"]);
    });

    test("watchRevocations from cursor 0 replays a recent logout, then a heartbeat past it", async () => {
      const { user, sessionId } = await signedIn();
      await user.logout();

      const events = await untilHeartbeat(serviceClient(replicaB).watchRevocations(0n));

      const revocation = events.find((event) => event.kind === "revocation" && event.sessionId === sessionId);
      const heartbeat = events.at(-1);
      assert.ok(revocation?.kind === "revocation" && heartbeat?.kind === "heartbeat", inspect(events));
      assert.equal(revocation.reason, SessionEndReason.USER_LOGOUT);
      assert.ok(heartbeat.cursor >= revocation.cursor);
    });

    test("a RevocationFeed followed directly, with the defaults, tells onEvent of a revocation made through another replica", async () => {
      const log = new FeedLog();
      const feed = new RevocationFeed(serviceClient(replicaB), { onEvent: log.onEvent });
      try {
        const { user, sessionId } = await signedIn();
        await log.current();
        const since = log.mark();

        await user.logout();
        const status = await log.revocationOf(sessionId, since);

        assert.ok(status.type === "revocation");
        assert.equal(status.revocation.reason, SessionEndReason.USER_LOGOUT);
        assert.ok(feed.isRevoked(sessionId) && feed.cursor >= status.revocation.cursor);
      } finally {
        await feed.close();
      }
    });

    test("the service key authenticates GetJwks and ValidateToken on a server that requires it", async () => {
      const strict = await startReplica({ AUTHSVC_REQUIRE_SERVICE_CREDENTIALS: "true" });
      const { accessToken } = await signedIn();

      const without = await refusal(newClient(strict).validateToken(accessToken));
      const keyed = serviceClient(strict);
      const principal = await new TokenVerifier(keyed).verify(accessToken);
      const validation = await keyed.validateToken(accessToken);

      assert.deepEqual(without, [ServiceCredentialsRequired.name, "SERVICE_CREDENTIALS_REQUIRED"]);
      assert.deepEqual([principal.sessionId, validation.active], [validation.sessionId, true]);
    });

    test("the service key shows in no inspection of the client and no refusal of a bad one", () => {
      const client = serviceClient(replicaB);
      let message = "";
      try {
        new AuthClient({ baseUrl: replicaB.baseUrl, serviceKey: `${service.key}\n` });
      } catch (error) {
        message = String(error);
      }

      assert.ok(message !== "" && !message.includes(service.key), message);
      assert.ok(!inspect(client, { depth: 10, showHidden: true }).includes(service.key));
    });

    test("a session revoked through replica A is refused by a verifier following replica B", async () => {
      const [verifier, log] = subscribed(serviceClient(replicaB), { whenStale: "refuse" });
      const { user, accessToken, sessionId } = await signedIn();
      await log.current();
      const accepted = await verifier.verify(accessToken);
      const since = log.mark();

      await user.logout();
      await log.revocationOf(sessionId, since);

      assert.equal(accepted.sessionId, sessionId);
      assert.deepEqual(await refusal(verifier.verify(accessToken)), [SessionRevoked.name, "SESSION_REVOKED"]);
    });

    test("a verifier catches up after its server restarts on a revocation made while it was down", async () => {
      let replicaC = await startReplica();
      const port = replicaC.port;
      const [verifier, log] = subscribed(serviceClient(replicaC), { whenStale: "refuse" });
      const { user, accessToken, sessionId } = await signedIn();
      await log.current();

      const down = log.mark();
      await replicaC.stop();
      await log.disconnected(down);
      await user.logout();
      replicaC = await startReplica({}, port);
      await log.revocationOf(sessionId, down);

      assert.deepEqual(await refusal(verifier.verify(accessToken)), [SessionRevoked.name, "SESSION_REVOKED"]);
    });

    test("a verifier whose feed is cut goes stale and then refuses every token (whenStale refuse)", async () => {
      const replicaD = await startReplica();
      const [verifier, log] = subscribed(serviceClient(replicaD), { whenStale: "refuse", staleAfterMs: STALE_AFTER_MS });
      const { accessToken, sessionId } = await signedIn();
      await log.current();
      const accepted = await verifier.verify(accessToken);

      const cut = log.mark();
      await replicaD.stop();
      await log.stale(cut);

      assert.equal(accepted.sessionId, sessionId);
      assert.deepEqual(await refusal(verifier.verify(accessToken)), [RevocationFeedStale.name, ""]);
    });

    test("a verifier whose feed is cut goes stale and then asks ValidateToken (whenStale validate)", async () => {
      const replicaD = await startReplica();
      // The feed from replica D; keys and the online check from the service's main address.
      const online = taggedClient(servers().main, { serviceKey: service.key });
      const feed = serviceClient(replicaD);
      const source: RevocationSource = {
        getJwks: () => online.client.getJwks(),
        validateToken: (token) => online.client.validateToken(token),
        watchRevocations: (cursor, options) => feed.watchRevocations(cursor, options),
      };
      const [verifier, log] = subscribed(source, { whenStale: "validate", staleAfterMs: STALE_AFTER_MS });
      const live = await signedIn();
      const revoked = await signedIn();
      await log.current();

      const cut = log.mark();
      await replicaD.stop();
      await log.stale(cut);
      await revoked.user.logout();
      const accepted = await verifier.verify(live.accessToken);
      const refused = await refusal(verifier.verify(revoked.accessToken));

      assert.equal(accepted.sessionId, live.sessionId);
      assert.deepEqual(refused, [SessionRevoked.name, "SESSION_REVOKED"]);
      assert.equal(await online.serverCount(VALIDATE_TOKEN), 2);
    });

    test("close() ends the subscription: a process that closes its verifier and client exits", async () => {
      const fixture = spawn(
        process.execPath,
        [path.join(path.dirname(fileURLToPath(import.meta.url)), "verifier_close_fixture.js"), replicaB.baseUrl],
        { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, AUTHSVC_TEST_SERVICE_KEY: service.key } },
      );
      let output = "";
      fixture.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      fixture.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));

      // Bounded: a leaked timer or stream would keep it alive far longer.
      const exitCode = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => {
          fixture.kill("SIGKILL");
          resolve(null);
        }, EVENT_TIMEOUT_MS);
        fixture.once("exit", (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });

      assert.deepEqual([exitCode, output.trim()], [0, "current, then closed"]);
    });
  });
}
