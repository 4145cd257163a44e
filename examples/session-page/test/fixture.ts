// One stack (authsvc on its embedded PostgreSQL, the BFF) and one Chromium per test file,
// started before its first test and stopped after its last: each file is a scenario group
// whose authsvc settings differ.

import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { after, afterEach, before } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { startStack, type Stack, type StackOptions } from "#build/dev/stack.js";
import { launchChromium, newDevice, type Device } from "./browser.js";
import { signIn, type Account } from "./session_page.js";

// A wait the page should finish in well under a second; Playwright's default is 30 s.
const STEP_TIMEOUT_MS = 10_000;

export interface Fixture {
  readonly stack: Stack;
  readonly browser: Browser;
  /** A page in a fresh browser profile presenting itself as `device`; closed after the test. */
  open(device: Device): Promise<Page>;
  /** open(device), then sign in there as `account`. */
  signedIn(device: Device, account: Account): Promise<Page>;
}

/** The file's stack and browser; read them inside tests, after `before` has run. */
export function useStack(options: StackOptions = {}): Fixture {
  let stack: Stack | undefined;
  let browser: Browser | undefined;
  const contexts: BrowserContext[] = [];
  before(async () => {
    // Both kept even when the other fails to start, so `after` stops whichever did.
    const [started, launched] = await Promise.allSettled([startStack(options), launchChromium()]);
    stack = started.status === "fulfilled" ? started.value : undefined;
    browser = launched.status === "fulfilled" ? launched.value : undefined;
    for (const result of [started, launched]) {
      if (result.status === "rejected") throw result.reason;
    }
  });
  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((context) => context.close()));
  });
  after(async () => {
    await Promise.all([browser?.close(), stack?.stop()]);
  });
  const fixture: Fixture = {
    get stack() {
      if (stack === undefined) throw new Error("the stack is not started yet");
      return stack;
    },
    get browser() {
      if (browser === undefined) throw new Error("the browser is not started yet");
      return browser;
    },
    async open(device) {
      const context = await newDevice(fixture.browser, fixture.stack.pageUrl, device);
      contexts.push(context);
      context.setDefaultTimeout(STEP_TIMEOUT_MS);
      return context.newPage();
    },
    async signedIn(device, account) {
      const page = await fixture.open(device);
      await signIn(page, account);
      return page;
    },
  };
  return fixture;
}

/** `.venv/bin/authsvc` of the repo these tests are in (AUTHSVC_BIN overrides, as for the stack). */
function authsvcBinary(): string {
  const override = process.env["AUTHSVC_BIN"];
  if (override) return override;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, ".venv", "bin", "authsvc");
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("no .venv/bin/authsvc above the tests: run `make bootstrap`");
    dir = parent;
  }
}

/**
 * Sign out every session of `userId` as an operator does: `authsvc admin
 * revoke-user-sessions` (AdminService.RevokeUserSessions) with the stack's operator key.
 */
export async function operatorRevokesUserSessions(stack: Stack, userId: string): Promise<void> {
  await promisify(execFile)(
    authsvcBinary(),
    ["admin", "revoke-user-sessions", "--address", new URL(stack.authsvcUrl).host, "--user-id", userId, "--reason", "browser test"],
    { env: { ...withoutAuthsvcSettings(process.env), AUTHSVC_OPERATOR_KEY: stack.operatorKey }, timeout: 30_000 },
  );
}

/** `env` less any AUTHSVC_* a developer's shell has set, which would steer the CLI elsewhere. */
function withoutAuthsvcSettings(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.startsWith("AUTHSVC_")));
}
