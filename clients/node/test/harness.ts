// Test harness: runs the real authsvc server (<repo>/.venv/bin/authsvc serve, embedded
// PostgreSQL in a fresh temp dir) and reads its JSON-lines log, so tests can count the RPCs
// the server actually received.
//
// Nothing it starts outlives the test process: each server leads its own process group and
// is told SIGTERM at exit, and a detached reaper (reaper.ts) stops the servers and their
// PostgreSQL and deletes the data dir when the test process ends any other way (a signal,
// SIGKILL), since no exit handler runs then.

import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AuthClient, type AuthClientOptions } from "../src/client.js";
import { AuthService } from "../src/gen/authsvc/v1/auth_service_pb.js";

export const REFRESH_RPC = "/authsvc.v1.AuthService/Refresh";

/** The fields of the server's per-RPC access-log line that tests read. */
export interface RpcLogLine {
  event: "rpc";
  rpc: string;
  code: string;
  reason: string;
  request_id?: string;
}

const SERVING = /authsvc: serving gRPC on 127\.0\.0\.1:(\d+)/;
// With AUTHSVC_HTTP_PORT set (the JWKS and discovery port), logged before the gRPC line.
const SERVING_HTTP = /serving HTTP on [^:]+:(\d+)/;

/** What the reaper is told (see reaper.ts). */
type ReaperMessage = { server: number } | { exited: number } | { dataDir: string } | { removed: string };

let reaperInput: ((message: ReaperMessage) => void) | undefined;

/** Tell this process's reaper, started on first use, what to stop if this process dies. */
function tellReaper(message: ReaperMessage): void {
  if (reaperInput === undefined) {
    const reaper = spawn(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), "reaper.js")], {
      detached: true,
      stdio: ["pipe", "ignore", "ignore"],
    });
    const input = reaper.stdin;
    assert.ok(input !== null);
    // Neither keeps this process running; the pipe closes when it ends, however it ends.
    reaper.unref();
    (input as unknown as { unref(): void }).unref();
    reaperInput = (next) => input.write(`${JSON.stringify(next)}\n`);
  }
  reaperInput(message);
}

/** A fresh AUTHSVC_DATA_DIR that the reaper deletes if this process dies before removeDataDir. */
export async function newDataDir(): Promise<string> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "authsvc-node-test-"));
  tellReaper({ dataDir });
  return dataDir;
}

export async function removeDataDir(dataDir: string): Promise<void> {
  await rm(dataDir, { recursive: true, force: true });
  tellReaper({ removed: dataDir });
}

/** `.venv/bin/authsvc` of the repo this file is in (AUTHSVC_BIN overrides). */
function authsvcBinary(): string {
  const override = process.env["AUTHSVC_BIN"];
  if (override) {
    return override;
  }
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, ".venv", "bin", "authsvc");
    if (existsSync(candidate)) {
      return candidate;
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error("no .venv/bin/authsvc above the tests: run `make bootstrap` (or set AUTHSVC_BIN)");
    }
    dir = parent;
  }
}

/** The signing key that signs now, as `python -m tests.active_signing_key` prints it. */
export interface SigningKey {
  kid: string;
  algorithm: string;
  private_key_pem: string;
}

/**
 * The servers' active signing key, read from their database by the repo's own Python (the
 * .venv beside the authsvc binary), so tests can sign tokens exactly as the server would.
 */
export async function activeSigningKey(dataDir: string): Promise<SigningKey> {
  const venvBin = path.dirname(authsvcBinary());
  const { stdout } = await promisify(execFile)(
    path.join(venvBin, "python"),
    ["-m", "tests.active_signing_key"],
    { cwd: path.dirname(path.dirname(venvBin)), env: serverEnv(dataDir, {}), timeout: 60_000 },
  );
  return JSON.parse(stdout) as SigningKey;
}

/**
 * A small MaxMind-format GeoIP database at `file`, written by the repo's own Python
 * (`python -m tests.geoip_database`): it places loopback, where the tests connect from, in
 * the city its `LOOPBACK` names.
 */
export async function writeGeoIpDatabase(file: string): Promise<void> {
  const venvBin = path.dirname(authsvcBinary());
  await promisify(execFile)(path.join(venvBin, "python"), ["-m", "tests.geoip_database", file], {
    cwd: path.dirname(path.dirname(venvBin)),
    timeout: 60_000,
  });
}

/** A service key and the AUTHSVC_SERVICE_KEYS entry that accepts it. */
export interface ServiceKey {
  key: string;
  entry: string;
}

/** A new service key for `name`, minted by the repo's own `mint_service_key` (as the CLI does). */
export async function mintServiceKey(name: string): Promise<ServiceKey> {
  const venvBin = path.dirname(authsvcBinary());
  const script = [
    "import json, sys",
    "from authsvc.service_keys import mint_service_key",
    "key, entry = mint_service_key(sys.argv[1])",
    "json.dump({'key': key, 'entry': entry}, sys.stdout)",
  ].join("\n");
  const { stdout } = await promisify(execFile)(path.join(venvBin, "python"), ["-c", script, name], {
    timeout: 60_000,
  });
  return JSON.parse(stdout) as ServiceKey;
}

/** The environment of a server: ours, without any AUTHSVC_* the developer's shell has set. */
function serverEnv(dataDir: string, extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("AUTHSVC_")) {
      env[key] = value;
    }
  }
  return {
    ...env,
    AUTHSVC_DATA_DIR: dataDir,
    // One server process, no supervisor: the tests start replicas themselves.
    AUTHSVC_WORKERS: "1",
    AUTHSVC_ARGON2_TIME_COST: "1",
    AUTHSVC_ARGON2_MEMORY_KIB: "1024",
    AUTHSVC_ARGON2_PARALLELISM: "1",
    AUTHSVC_LOG_LEVEL: "INFO",
    // Every test account signs up from this one address.
    AUTHSVC_SIGN_UPS_PER_IP: "100000",
    // Sweep once at start only: a periodic sweep deleting a just-expired refresh token
    // would turn the REFRESH_TOKEN_EXPIRED test's answer into REFRESH_TOKEN_INVALID.
    AUTHSVC_SWEEP_INTERVAL: "24h",
    ...extra,
  };
}

export class AuthsvcServer {
  /** Its AUTHSVC_DATA_DIR: the embedded PostgreSQL it shares with its replicas. */
  readonly dataDir: string;
  readonly #child: ChildProcess;
  readonly #lines: string[] = [];
  readonly #rpcs: RpcLogLine[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #exited: Promise<number | null>;
  #port: number | undefined;
  #httpPort: number | undefined;

  private constructor(binary: string, dataDir: string, env: NodeJS.ProcessEnv, port: number) {
    this.dataDir = dataDir;
    this.#child = spawn(binary, ["serve", "--host", "127.0.0.1", "--port", String(port)], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group: a terminal's Ctrl-C reaches the test process alone, which
      // (or whose reaper) stops the servers in order, each stopping PostgreSQL if last.
      detached: true,
    });
    const pid = this.#child.pid;
    if (pid !== undefined) {
      tellReaper({ server: pid });
    }
    this.#exited = new Promise((resolve) => this.#child.once("exit", (code) => resolve(code)));
    // If the test process exits without running its after hooks, do not leave servers behind.
    const orphanGuard = () => this.#child.kill("SIGTERM");
    process.once("exit", orphanGuard);
    void this.#exited.then(() => {
      process.removeListener("exit", orphanGuard);
      if (pid !== undefined) {
        tellReaper({ exited: pid });
      }
    });
    for (const stream of [this.#child.stdout, this.#child.stderr]) {
      if (stream !== null) {
        createInterface({ input: stream }).on("line", (line) => this.#onLine(line));
      }
    }
  }

  /**
   * Start `authsvc serve` on a free port and wait until it answers RPCs. Servers given the
   * same dataDir share one embedded PostgreSQL: they are replicas of one service. `port`
   * restarts one where its clients expect it; `serviceKey` is for a server that requires
   * service credentials on GetJwks, which the readiness probe calls.
   */
  static async start(
    dataDir: string,
    env: Record<string, string> = {},
    { port = 0, serviceKey }: { port?: number; serviceKey?: string } = {},
  ): Promise<AuthsvcServer> {
    const server = new AuthsvcServer(authsvcBinary(), dataDir, serverEnv(dataDir, env), port);
    try {
      await server.#waitForPort(60_000);
      await server.#waitUntilAnswering(10_000, serviceKey);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  /** The server's process id (the leader of its process group). */
  get pid(): number | undefined {
    return this.#child.pid;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** Its HTTP port's base URL (AUTHSVC_HTTP_PORT), e.g. for `/.well-known/jwks.json`. */
  get httpBaseUrl(): string {
    assert.ok(this.#httpPort !== undefined, "this server has no HTTP port (AUTHSVC_HTTP_PORT)");
    return `http://127.0.0.1:${this.#httpPort}`;
  }

  /** The port it serves on (once started). */
  get port(): number | undefined {
    return this.#port;
  }

  /** Every access-log line (event "rpc") read so far. */
  get rpcLog(): readonly RpcLogLine[] {
    return this.#rpcs;
  }

  /** The last lines of output, for failure messages. */
  tail(count = 40): string {
    return this.#lines.slice(-count).join("\n");
  }

  /** Resolves once the server has logged a line that `matches`; bounded by `timeoutMs`. */
  async waitForRpc(matches: (line: RpcLogLine) => boolean, timeoutMs = 5_000): Promise<void> {
    await this.#waitFor(() => this.#rpcs.some(matches), timeoutMs, "the expected access-log line");
  }

  /** SIGTERM, then wait for the exit (the server stops its embedded PostgreSQL first). */
  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return;
    }
    this.#child.kill("SIGTERM");
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 30_000);
    await this.#exited;
    clearTimeout(timer);
  }

  #onLine(line: string): void {
    this.#lines.push(line);
    const port = SERVING.exec(line)?.[1];
    if (port !== undefined) {
      this.#port = Number(port);
    }
    const httpPort = SERVING_HTTP.exec(line)?.[1];
    if (httpPort !== undefined) {
      this.#httpPort = Number(httpPort);
    }
    if (line.startsWith("{")) {
      try {
        const entry = JSON.parse(line) as { event?: unknown };
        if (entry.event === "rpc") {
          this.#rpcs.push(entry as RpcLogLine);
        }
      } catch {
        // Not a JSON log line (a warning from a library); kept in #lines only.
      }
    }
    for (const wake of this.#waiters) {
      wake();
    }
  }

  async #waitFor(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (done()) {
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const finish = (error?: Error) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        if (error) {
          reject(error);
        } else {
          resolve();
        }
      };
      const check = () => {
        if (done()) {
          finish();
        }
      };
      const timer = setTimeout(
        () => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${this.tail()}`)),
        timeoutMs,
      );
      this.#waiters.add(check);
      void this.#exited.then((code) =>
        finish(new Error(`authsvc exited (${code}) while waiting for ${what}\n${this.tail()}`)),
      );
    });
  }

  async #waitForPort(timeoutMs: number): Promise<void> {
    await this.#waitFor(() => this.#port !== undefined, timeoutMs, "'serving gRPC on'");
  }

  // The port opens before migrations and keys are loaded; until then RPCs are UNAVAILABLE
  // (NOT_READY). Poll a cheap RPC, a bounded number of times.
  async #waitUntilAnswering(timeoutMs: number, serviceKey: string | undefined): Promise<void> {
    const connection = new Http2SessionManager(this.baseUrl);
    const raw = createClient(AuthService, createGrpcTransport({ baseUrl: this.baseUrl, sessionManager: connection }));
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        try {
          const headers = serviceKey === undefined ? {} : { authorization: `Bearer ${serviceKey}` };
          await raw.getJwks({}, { timeoutMs: 2_000, headers });
          return;
        } catch (error) {
          const code = ConnectError.from(error).code;
          if (code !== Code.Unavailable || Date.now() > deadline) {
            throw new Error(`authsvc did not become ready: ${String(error)}\n${this.tail()}`);
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      connection.abort();
    }
  }
}

/** The servers every test shares: started once per run, stopped at the end. */
export interface Servers {
  /** authsvc with its defaults (15 min access tokens). */
  main: AuthsvcServer;
  /**
   * A second replica on the same database with 3 s access tokens, no clock skew allowance
   * and no refresh grace period, for the tests that need the server itself to reject an
   * expired token or a replayed refresh token.
   */
  shortTtl: AuthsvcServer;
  /**
   * A third replica with registration disabled and a 2 s session idle timeout, for the
   * REGISTRATION_DISABLED, SESSION_EXPIRED and REFRESH_TOKEN_EXPIRED tests (errors.ts). A
   * session signed in here gets the short idle deadline; Register here is refused.
   */
  restricted: AuthsvcServer;
  /**
   * A fourth replica whose sign-up hashing has one thread, no queue and a costly hash, so
   * that of Register calls sent together all but the first are refused SERVER_BUSY.
   */
  busy: AuthsvcServer;
}

export const SHORT_ACCESS_TOKEN_TTL = "3s";
export const SHORT_SESSION_IDLE_TIMEOUT = "2s";

/**
 * The settings (AUTHSVC_<NAME>, lower case) each shared server runs with beyond the test
 * defaults, for tests that pick a server by what it must do (the scenario table's "server").
 */
export const SERVER_SETTINGS = {
  main: {},
  shortTtl: {
    access_token_ttl: SHORT_ACCESS_TOKEN_TTL,
    // Expired at `exp` itself, so the tests wait under 3 s, not the default 30 s skew more.
    clock_skew: "0s",
    refresh_grace_period: "0s",
  },
  restricted: { registration_enabled: "false", session_idle_timeout: SHORT_SESSION_IDLE_TIMEOUT },
  busy: {
    sign_up_hash_workers: "1",
    hash_queue_limit: "0",
    argon2_time_cost: "10",
    argon2_memory_kib: "65536",
  },
} as const satisfies Record<keyof Servers, Record<string, string>>;

function settingsEnv(settings: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(settings).map(([name, value]) => [`AUTHSVC_${name.toUpperCase()}`, value]));
}

export async function startServers(): Promise<{ servers: Servers; stop: () => Promise<void> }> {
  const dataDir = await newDataDir();
  const started: AuthsvcServer[] = [];
  const stop = async () => {
    // Replicas first; the last one out stops the shared PostgreSQL.
    for (const server of started.reverse()) {
      await server.stop();
    }
    await removeDataDir(dataDir);
  };
  try {
    // The first start initialises the data dir; the replica joins its PostgreSQL.
    const main = await AuthsvcServer.start(dataDir, settingsEnv(SERVER_SETTINGS.main));
    started.push(main);
    const shortTtl = await AuthsvcServer.start(dataDir, settingsEnv(SERVER_SETTINGS.shortTtl));
    started.push(shortTtl);
    // Another replica joining the running PostgreSQL: about half a second.
    const restricted = await AuthsvcServer.start(dataDir, settingsEnv(SERVER_SETTINGS.restricted));
    started.push(restricted);
    const busy = await AuthsvcServer.start(dataDir, settingsEnv(SERVER_SETTINGS.busy));
    started.push(busy);
    return { servers: { main, shortTtl, restricted, busy }, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The error `promise` rejects with; fails the test if it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected the call to fail");
}

/** A fresh, unique account. */
export function newAccount(): { email: string; password: string } {
  return { email: `user-${randomUUID()}@example.com`, password: "correct horse battery staple" };
}

/** `make`, with everything it makes closed once the enclosing suite's tests are done. */
export function closedAfterSuite<Args extends unknown[], T extends { close(): void }>(
  make: (...args: Args) => T,
): (...args: Args) => T {
  const made: T[] = [];
  after(() => {
    for (const item of made) {
      item.close();
    }
  });
  return (...args) => {
    const item = make(...args);
    made.push(item);
    return item;
  };
}

/**
 * A client whose every RPC carries `x-request-id: <tag>-<n>`, which the server logs, so
 * the test can count the RPCs this client (and no other) made.
 */
export class TaggedClient {
  readonly client: AuthClient;
  readonly #server: AuthsvcServer;
  readonly #tag: string;
  #sequence = 0;

  /** Clients given one `tag` are counted together (a client and its restarted successor). */
  constructor(server: AuthsvcServer, options: Partial<AuthClientOptions> = {}, tag = newTag()) {
    this.#server = server;
    this.#tag = tag;
    const tagging: Interceptor = (next) => async (req) => {
      if (!req.header.has("x-request-id")) {
        req.header.set("x-request-id", `${this.#tag}-${this.#sequence++}`);
      }
      return next(req);
    };
    this.client = new AuthClient({
      ...options,
      baseUrl: server.baseUrl,
      interceptors: [tagging, ...(options.interceptors ?? [])],
    });
  }

  /**
   * The server's access-log lines for `rpc` calls this client (and no other) made, in order.
   * Sends a marker RPC and waits for its line first: the server logs each RPC before it
   * answers, into one ordered stream, so every earlier RPC of this client is in by then.
   */
  async serverLog(rpc: string): Promise<RpcLogLine[]> {
    const marker = `${this.#tag}-marker-${randomUUID()}`;
    await this.client.getJwks({ headers: { "x-request-id": marker } });
    await this.#server.waitForRpc((line) => line.request_id === marker);
    const prefix = `${this.#tag}-`;
    return this.#server.rpcLog.filter((line) => line.rpc === rpc && line.request_id?.startsWith(prefix));
  }

  /** How many `rpc` calls from this client the server received (see serverLog). */
  async serverCount(rpc: string): Promise<number> {
    return (await this.serverLog(rpc)).length;
  }

  close(): void {
    this.client.close();
  }
}

/** A request-id prefix of its own, for TaggedClient. */
export function newTag(): string {
  return `t${randomUUID().replaceAll("-", "")}`;
}

/** Resolves once the wall clock has passed `instant` (bounded: the instants here are seconds away). */
export async function waitUntilPast(instant: Date, marginMs = 50): Promise<void> {
  const waitMs = instant.getTime() + marginMs - Date.now();
  if (waitMs > 10_000) {
    throw new Error(`refusing to wait ${waitMs} ms for ${instant.toISOString()}`);
  }
  if (waitMs > 0) {
    await new Promise((resolve) => setTimeout(resolve, waitMs));
  }
}
