// The whole example on one machine: authsvc on its embedded PostgreSQL, and the BFF in front
// of it, each a child process leading its own process group. `make example-session-page`
// runs it for people (src/dev/main.ts); the browser tests run it for each suite.
//
// Nothing outlives the process that started the stack: stop() ends both children, and a
// detached reaper (reaper.ts) ends them if that process dies first.

import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { AuthClient, Unavailable } from "@authsvc/client";

export interface StackOptions {
  /** Extra AUTHSVC_* settings, e.g. { AUTHSVC_SESSION_IDLE_TIMEOUT: "20s" }. */
  authsvcEnv?: Record<string, string>;
  /** Extra SESSION_PAGE_* settings of the BFF, e.g. { SESSION_PAGE_MAX_SESSIONS: "3" }. */
  bffEnv?: Record<string, string>;
  /** BFF port; 0 = any free port. */
  pagePort?: number;
  /** authsvc's gRPC port; 0 (the default) = any free port. */
  authsvcPort?: number;
  /** Directory for the embedded PostgreSQL; a fresh temp dir by default (deleted by stop()). */
  dataDir?: string;
  /** Each line the children print, e.g. to show them in a terminal. Default: kept quiet. */
  onLine?: (source: "authsvc" | "bff", line: string) => void;
}

export interface Stack {
  pageUrl: string;
  /**
   * The page at http://localhost:<port>: the origin passkeys work on (authsvc's relying
   * party is `localhost`; a browser allows WebAuthn there over plain HTTP, not on an IP).
   */
  passkeyPageUrl: string;
  authsvcUrl: string;
  /** A service key allowed on AdminService (AUTHSVC_OPERATORS). */
  operatorKey: string;
  createUser(email: string, password: string): Promise<void>;
  stop(): Promise<void>;
}

const SERVING = /authsvc: serving gRPC on 127\.0\.0\.1:(\d+)/;
const START_TIMEOUT_MS = 90_000;
const STOP_TIMEOUT_MS = 30_000;
/** The service names the keys are minted for (authsvc logs them on each call). */
const BFF_SERVICE = "session-page";
const OPERATOR_SERVICE = "session-page-operator";

const here = path.dirname(fileURLToPath(import.meta.url));
/** build/dev/ -> the example's root, where build/server/main.js is. */
const exampleRoot = path.resolve(here, "..", "..");

/** `.venv/bin/authsvc` of the repo this example is in (AUTHSVC_BIN overrides). */
function authsvcBinary(): string {
  const override = process.env["AUTHSVC_BIN"];
  if (override) {
    return override;
  }
  for (let dir = exampleRoot; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, ".venv", "bin", "authsvc");
    if (existsSync(candidate)) {
      return candidate;
    }
    if (path.dirname(dir) === dir) {
      throw new Error("no .venv/bin/authsvc above the example: run `make bootstrap` (or set AUTHSVC_BIN)");
    }
  }
}

let reaperInput: ((message: object) => void) | undefined;

function tellReaper(message: object): void {
  if (reaperInput === undefined) {
    const reaper = spawn(process.execPath, [path.join(here, "reaper.js")], {
      detached: true,
      stdio: ["pipe", "ignore", "ignore"],
    });
    const input = reaper.stdin;
    assert.ok(input !== null);
    reaper.unref();
    (input as unknown as { unref(): void }).unref();
    reaperInput = (next) => input.write(`${JSON.stringify(next)}\n`);
  }
  reaperInput(message);
}

/** A child process leading its own group, its output read line by line. */
class Child {
  readonly #process: ChildProcess;
  readonly #lines: string[] = [];
  readonly #waiters = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: "authsvc" | "bff",
    command: string,
    args: string[],
    env: NodeJS.ProcessEnv,
    onLine: ((source: "authsvc" | "bff", line: string) => void) | undefined,
  ) {
    this.#process = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const pid = this.#process.pid;
    if (pid !== undefined) {
      tellReaper({ group: pid });
    }
    this.exited = new Promise((resolve) => this.#process.once("exit", (code) => resolve(code)));
    void this.exited.then(() => {
      if (pid !== undefined) {
        tellReaper({ exited: pid });
      }
      this.#wake();
    });
    for (const stream of [this.#process.stdout, this.#process.stderr]) {
      createInterface({ input: stream as NodeJS.ReadableStream }).on("line", (line) => {
        this.#lines.push(line);
        if (this.#lines.length > 200) {
          this.#lines.shift();
        }
        onLine?.(name, line);
        this.#wake();
      });
    }
  }

  get running(): boolean {
    return this.#process.exitCode === null && this.#process.signalCode === null;
  }

  tail(count = 30): string {
    return this.#lines.slice(-count).join("\n");
  }

  /** The first value `pick` finds in a line (earlier lines included); bounded by `timeoutMs`. */
  async waitForLine<T>(pick: (line: string) => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        for (const line of this.#lines) {
          const found = pick(line);
          if (found !== undefined) {
            return finish(undefined, found);
          }
        }
        if (!this.running) {
          finish(new Error(`${this.name} exited while waiting for ${what}\n${this.tail()}`));
        }
      };
      const finish = (error?: Error, value?: T) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        if (error) reject(error);
        else resolve(value as T);
      };
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${what}\n${this.tail()}`)), timeoutMs);
      this.#waiters.add(check);
      check();
    });
  }

  /** SIGTERM to its group, SIGKILL if it hangs; resolves once it has exited. */
  async stop(): Promise<void> {
    if (!this.running || this.#process.pid === undefined) {
      return;
    }
    const group = -this.#process.pid;
    const signal = (name: NodeJS.Signals) => {
      try {
        process.kill(group, name);
      } catch {
        // Gone meanwhile; its exit event is on its way.
      }
    };
    signal("SIGTERM");
    const timer = setTimeout(() => signal("SIGKILL"), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  #wake(): void {
    for (const wake of this.#waiters) {
      wake();
    }
  }
}

/** `authsvc service-key create NAME`: the key and its AUTHSVC_SERVICE_KEYS entry. */
async function createServiceKey(binary: string, name: string): Promise<{ key: string; entry: string }> {
  const { stdout } = await promisify(execFile)(binary, ["service-key", "create", name], { timeout: 60_000 });
  const [key, entry] = stdout.trim().split("\n");
  assert.ok(key && entry, "authsvc service-key create printed no key and entry");
  return { key, entry };
}

/** The environment of a child: ours, without any AUTHSVC_* or SESSION_PAGE_* of the shell. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("AUTHSVC_") && !key.startsWith("SESSION_PAGE_")) {
      env[key] = value;
    }
  }
  return { ...env, ...extra };
}

/** Until authsvc answers RPCs: its port opens before migrations and keys are loaded. */
async function waitUntilAnswering(client: AuthClient, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await client.getJwks({ timeoutMs: 2_000 });
      return;
    } catch (error) {
      if (!(error instanceof Unavailable) || Date.now() > deadline) {
        throw error;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A port nothing listens on now, for the BFF: authsvc must know the page's origin first. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.ok(address !== null && typeof address === "object");
  return address.port;
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const binary = authsvcBinary();
  const repoRoot = path.dirname(path.dirname(path.dirname(binary)));
  const ownDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), "session-page-")));
  if (ownDataDir) {
    tellReaper({ dataDir });
  }
  const children: Child[] = [];
  let admin: AuthClient | undefined;
  const stop = async () => {
    admin?.close();
    for (const child of children.reverse()) {
      await child.stop();
    }
    if (ownDataDir) {
      await rm(dataDir, { recursive: true, force: true });
      tellReaper({ removed: dataDir });
    }
  };
  try {
    const pagePort = options.pagePort || (await freePort());
    const passkeyPageUrl = `http://localhost:${pagePort}`;
    const [bffKey, operatorKey] = await Promise.all([
      createServiceKey(binary, BFF_SERVICE),
      createServiceKey(binary, OPERATOR_SERVICE),
    ]);
    // Sessions get a location: this test database puts loopback in Wellington, NZ.
    const geoip = path.join(dataDir, "geoip.mmdb");
    await promisify(execFile)(path.join(path.dirname(binary), "python"), ["-m", "tests.geoip_database", geoip], {
      cwd: repoRoot,
      timeout: 60_000,
    });
    const authsvc = new Child(
      "authsvc",
      binary,
      ["serve", "--host", "127.0.0.1", "--port", String(options.authsvcPort ?? 0)],
      childEnv({
        AUTHSVC_DATA_DIR: dataDir,
        AUTHSVC_WORKERS: "1",
        AUTHSVC_SERVICE_KEYS: `${bffKey.entry},${operatorKey.entry}`,
        AUTHSVC_OPERATORS: OPERATOR_SERVICE,
        // The BFF is the proxy whose x-forwarded-for (the browser's address) is believed.
        AUTHSVC_TRUSTED_PROXIES: "127.0.0.1/32,::1/128",
        AUTHSVC_GEOIP_DATABASE: geoip,
        // A development stack: cheap hashing, and every demo account signs up from loopback.
        AUTHSVC_ARGON2_TIME_COST: "1",
        AUTHSVC_ARGON2_MEMORY_KIB: "8192",
        AUTHSVC_ARGON2_PARALLELISM: "1",
        AUTHSVC_SIGN_UPS_PER_IP: "100000",
        AUTHSVC_LOG_LEVEL: "INFO",
        // Passkeys for the page as browsers reach it by name (passkeyPageUrl).
        AUTHSVC_WEBAUTHN_RP_ID: "localhost",
        AUTHSVC_WEBAUTHN_RP_NAME: "authsvc session page",
        AUTHSVC_WEBAUTHN_ORIGINS: passkeyPageUrl,
        ...options.authsvcEnv,
      }),
      options.onLine,
    );
    children.push(authsvc);
    const port = await authsvc.waitForLine((line) => SERVING.exec(line)?.[1], START_TIMEOUT_MS, "authsvc to listen");
    const authsvcUrl = `http://127.0.0.1:${port}`;
    admin = new AuthClient({ baseUrl: authsvcUrl });
    await waitUntilAnswering(admin, START_TIMEOUT_MS);

    const bff = new Child(
      "bff",
      process.execPath,
      [path.join(exampleRoot, "build", "server", "main.js")],
      childEnv({
        AUTHSVC_ADDR: authsvcUrl,
        SESSION_PAGE_SERVICE_KEY: bffKey.key,
        SESSION_PAGE_HOST: "127.0.0.1",
        SESSION_PAGE_PORT: String(pagePort),
        ...options.bffEnv,
      }),
      options.onLine,
    );
    children.push(bff);
    const pageUrl = await bff.waitForLine(
      (line) => {
        if (!line.startsWith("{")) return undefined;
        const entry = JSON.parse(line) as { event?: string; url?: string };
        return entry.event === "listening" ? entry.url : undefined;
      },
      START_TIMEOUT_MS,
      "the BFF to listen",
    );
    const registrar = admin;
    return {
      pageUrl,
      passkeyPageUrl,
      authsvcUrl,
      operatorKey: operatorKey.key,
      // Register, not the client's register(): that would also sign in, adding a session.
      createUser: async (email, password) => {
        await registrar.raw.register({ email, password });
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
