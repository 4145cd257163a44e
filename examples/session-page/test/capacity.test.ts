// The BFF's session store under pressure: one account cannot take everyone's slots (a
// per-user cap signs out that user's own least recently seen browser), and a full store
// refuses the next sign-in instead of signing anybody out to make room.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AuthClient } from "@authsvc/client";
import type { Page } from "playwright-core";
import { END_REASON_SENTENCES } from "#build/shared/end_reasons.js";
import { useStack } from "./fixture.js";
import { currentSessionId, endedDialog, newAccount, signOutDevice, submitLogin, type Account } from "./session_page.js";

// Four slots, two per user: a user can reach their cap while another user is signed in and
// the store still has room, so the two limits are told apart.
const MAX_SESSIONS = 4;
const MAX_SESSIONS_PER_USER = 2;

const fixture = useStack({
  bffEnv: {
    SESSION_PAGE_MAX_SESSIONS: String(MAX_SESSIONS),
    SESSION_PAGE_MAX_SESSIONS_PER_USER: String(MAX_SESSIONS_PER_USER),
  },
});

async function newUser(): Promise<Account> {
  const account = newAccount();
  await fixture.stack.createUser(account.email, account.password);
  return account;
}

interface ErrorAnswer {
  error: string;
  message: string;
  retryAfterSeconds?: number;
}

/** The status of the page's GET /api/sessions (its own cookie): 200 while signed in. */
async function listStatus(page: Page): Promise<number> {
  return (await page.context().request.get("/api/sessions")).status();
}

/**
 * The pages this file's tests signed in. The store outlives a test, so each test signs its
 * live browsers out at the end (ended ones need not: a sign-in drops them when short of room).
 */
const signedInPages: Page[] = [];

async function signedIn(account: Account): Promise<Page> {
  const page = await fixture.signedIn("linuxChrome", account);
  signedInPages.push(page);
  return page;
}

async function signOutAll(): Promise<void> {
  for (const page of signedInPages.splice(0)) {
    const request = page.context().request;
    const state = (await (await request.get("/api/session")).json()) as { signedIn: boolean; csrfToken: string };
    if (state.signedIn) {
      const answer = await request.post("/api/logout", { headers: { "X-CSRF-Token": state.csrfToken } });
      assert.equal(answer.status(), 204);
    }
  }
}

/** Sign in at authsvc directly (not through the BFF) as `account`, for `use`. */
async function atAuthsvc<T>(account: Account, use: (client: AuthClient) => Promise<T>): Promise<T> {
  const client = new AuthClient({ baseUrl: fixture.stack.authsvcUrl });
  try {
    await client.login({ email: account.email, password: account.password });
    return await use(client);
  } finally {
    client.close();
  }
}

/** Fill every slot: two users, each at their cap. */
async function fillStore(): Promise<Page[]> {
  const pages: Page[] = [];
  for (let user = 0; user < MAX_SESSIONS / MAX_SESSIONS_PER_USER; user++) {
    const account = await newUser();
    for (let browser = 0; browser < MAX_SESSIONS_PER_USER; browser++) {
      pages.push(await signedIn(account));
    }
  }
  return pages;
}

interface Attempt {
  status: number;
  /** The Retry-After header, and the JSON answer, of a refusal. */
  retryAfter: string | undefined;
  answer: ErrorAnswer | undefined;
  page: Page;
}

/** A fresh browser signs in through the login form; the BFF's answer. */
async function attemptSignIn(account: Account): Promise<Attempt> {
  const page = await fixture.open("linuxChrome");
  await page.goto("/login");
  const response = await submitLogin(page, account);
  if (response.status() === 204) {
    signedInPages.push(page);
    return { status: 204, retryAfter: undefined, answer: undefined, page };
  }
  const answer = (await response.json()) as ErrorAnswer;
  return { status: response.status(), retryAfter: response.headers()["retry-after"], answer, page };
}

describe("one account cannot sign others out", () => {
  test("a sign-in beyond the user's cap signs out their least recently seen browser, nobody else's", async () => {
    try {
      const [alice, bob] = await Promise.all([newUser(), newUser()]);
      const bobsPage = await signedIn(bob);
      const oldest = await signedIn(alice);
      const oldestId = await currentSessionId(oldest);
      const second = await signedIn(alice);

      const newest = await signedIn(alice);

      // The oldest browser is told why, its cookie no longer works, and authsvc ended it.
      const dialog = endedDialog(oldest);
      await dialog.waitFor();
      const reason = (await dialog.locator("[data-testid=end-reason]").innerText()).trim();
      assert.equal(reason, END_REASON_SENTENCES.SESSION_LIMIT_EVICTED);
      assert.equal(await listStatus(oldest), 401);
      const ended = await atAuthsvc(alice, (client) => client.getSession(oldestId));
      assert.ok(ended.endedAt !== undefined, "the evicted browser's authsvc session is still live");
      // Everybody else stays signed in: Bob, and Alice's two most recent browsers.
      assert.deepEqual(
        [await listStatus(bobsPage), await listStatus(second), await listStatus(newest)],
        [200, 200, 200],
      );
    } finally {
      await signOutAll();
    }
  });
});

describe("a full store", () => {
  test("refuses the next sign-in with SERVER_BUSY before authsvc's Login, and signs nobody out", async () => {
    try {
      const pages = await fillStore();
      const late = await newUser();

      const refused = await attemptSignIn(late);

      assert.equal(refused.status, 503);
      assert.equal(refused.answer?.error, "SERVER_BUSY");
      assert.ok(Number(refused.retryAfter) > 0, `Retry-After: ${refused.retryAfter}`);
      assert.equal(refused.answer?.retryAfterSeconds, Number(refused.retryAfter));
      // The form says so in words, and the browser stays on the login page.
      const alert = refused.page.locator("[role=alert][data-testid=login-error]");
      await alert.filter({ hasText: refused.answer?.message ?? "" }).waitFor();
      assert.match(await alert.innerText(), /try again in \d+/i);
      // Nothing typed was wrong, and the form does not say it was.
      const password = refused.page.getByLabel("Password", { exact: true });
      assert.equal(await password.getAttribute("aria-invalid"), null);
      assert.equal(new URL(refused.page.url()).pathname, "/login");
      // Nobody was signed out to make room: every list still loads.
      assert.deepEqual(await Promise.all(pages.map(listStatus)), pages.map(() => 200));
      // Refused before authsvc's Login: the only session authsvc has for the user is this one.
      const sessions = await atAuthsvc(late, async (client) => {
        const ids: string[] = [];
        for await (const session of client.iterSessions()) ids.push(session.sessionId);
        return ids;
      });
      assert.equal(sessions.length, 1);
    } finally {
      await signOutAll();
    }
  });

  test("gives the slot of a session that ended to the next sign-in, and then is full again", async () => {
    try {
      const pages = await fillStore();
      const [first, second] = pages as [Page, Page, ...Page[]];
      // The first user's second browser signs the first out: it ends (its tab is told), and
      // its slot is kept for that tab's sake until someone needs it.
      await signOutDevice(second, await currentSessionId(first));
      await endedDialog(first).waitFor();
      const [next, after] = await Promise.all([newUser(), newUser()]);

      const admitted = await attemptSignIn(next);
      const refused = await attemptSignIn(after);

      assert.deepEqual([admitted.status, refused.status], [204, 503]);
      assert.equal(refused.answer?.error, "SERVER_BUSY");
      assert.deepEqual(await Promise.all(pages.slice(1).map(listStatus)), [200, 200, 200]);
    } finally {
      await signOutAll();
    }
  });
});
