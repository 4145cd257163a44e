// Scenarios 6 and 7 of the issue, and CSRF: what the login form says when sign-in fails,
// that no token ever reaches the page, and that another site cannot make the BFF act.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AuthClient } from "@authsvc/client";
import type { Page } from "playwright-core";
import { useStack } from "./fixture.js";
import { currentSessionId, newAccount, sessionItems, signIn, submitLogin, type Account } from "./session_page.js";

/** Failed logins of one account from one address before the throttle refuses the next. */
const LOGIN_FAILURES_ALLOWED = 2;

const fixture = useStack({
  authsvcEnv: { AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT_AND_IP: String(LOGIN_FAILURES_ALLOWED) },
});

async function newUser(): Promise<Account> {
  const account = newAccount();
  await fixture.stack.createUser(account.email, account.password);
  return account;
}

interface ErrorAnswer {
  error: string;
  message: string;
}

/** Submit the login form with a wrong password; the BFF's answer and what the form shows. */
async function failedLogin(page: Page, account: Account): Promise<{ status: number; answer: ErrorAnswer; shown: string }> {
  const response = await submitLogin(page, { ...account, password: "not the password" });
  const answer = (await response.json()) as ErrorAnswer;
  const alert = page.locator("[role=alert][data-testid=login-error]");
  await alert.filter({ hasText: answer.message }).waitFor();
  return { status: response.status(), answer, shown: (await alert.innerText()).trim() };
}

describe("the login form", () => {
  test("a wrong password gets a clear message in the form, and no sign-in", async () => {
    const account = await newUser();
    const page = await fixture.open("linuxChrome");
    await page.goto("/login");

    const failure = await failedLogin(page, account);

    assert.equal(failure.status, 401);
    assert.equal(failure.answer.error, "INVALID_CREDENTIALS");
    assert.equal(failure.shown, failure.answer.message);
    assert.match(failure.shown, /password/i);
    assert.equal(new URL(page.url()).pathname, "/login");
    assert.equal(await page.getByLabel("Password", { exact: true }).getAttribute("aria-invalid"), "true");
  });

  test("past the throttle's limit the form says to wait (RATE_LIMITED), not that the password is wrong", async () => {
    const account = await newUser();
    const page = await fixture.open("linuxChrome");
    await page.goto("/login");
    const failures = [];
    for (let attempt = 0; attempt <= LOGIN_FAILURES_ALLOWED; attempt++) {
      failures.push(await failedLogin(page, account));
    }

    const refused = failures.at(-1);

    assert.deepEqual(
      failures.map((failure) => failure.answer.error),
      [...Array<string>(LOGIN_FAILURES_ALLOWED).fill("INVALID_CREDENTIALS"), "RATE_LIMITED"],
    );
    assert.equal(refused?.status, 429);
    assert.equal(refused?.shown, refused?.answer.message);
    assert.match(refused?.shown ?? "", /try again in \d+/i);
  });
});

// An access token is a JWT (a base64url JSON header, so "eyJ" first); a refresh token is
// its user's id as 22 base64url characters, a dot, and 256 random bits as 43 base64url
// characters (authsvc/domain/refresh_tokens.py). The secret alone is searched for too (a
// token issued before the prefix has that shape).
const JWT = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
const OPAQUE_TOKEN = /(?<![A-Za-z0-9_.-])(?:[A-Za-z0-9_-]{22}\.)?[A-Za-z0-9_-]{43}(?![A-Za-z0-9_.-])/g;

/** Every token-shaped string in `text`, but those in `known` (values the page is meant to have). */
function tokenShaped(text: string, pattern: RegExp, known: readonly string[]): string[] {
  return [...text.matchAll(pattern)].map((match) => match[0]).filter((found) => !known.includes(found));
}

describe("tokens stay on the server", () => {
  test("the shapes searched for are those of the tokens authsvc issues", async () => {
    const account = await newUser();
    const client = new AuthClient({ baseUrl: fixture.stack.authsvcUrl });
    try {
      const tokens = await client.login({ email: account.email, password: account.password });

      assert.deepEqual(tokenShaped(tokens.accessToken, JWT, []), [tokens.accessToken]);
      assert.deepEqual(tokenShaped(tokens.refreshToken, OPAQUE_TOKEN, []), [tokens.refreshToken]);
    } finally {
      client.close();
    }
  });

  test("no token is readable by the page: not in document.cookie, storage or anything it fetched", async () => {
    const account = await newUser();
    const page = await fixture.open("linuxChrome");
    // Every answer the page receives passes through here, so its body is read before the
    // page can navigate away from it. An event stream never ends: it passes untouched.
    const fetched: { url: string; body: string; json: boolean }[] = [];
    await page.route("**/*", async (route) => {
      if (route.request().resourceType() === "eventsource") {
        await route.continue();
        return;
      }
      const response = await route.fetch({ maxRedirects: 0 });
      const json = (response.headers()["content-type"] ?? "").includes("json");
      fetched.push({ url: route.request().url(), body: await response.text(), json });
      await route.fulfill({ response });
    });
    await signIn(page, account);
    await currentSessionId(page);

    const cookies = await page.context().cookies();
    // Plain HTTP on localhost: no __Host- prefix, no Secure.
    const cookie = cookies.find((each) => each.name === "sid");
    assert.ok(cookie, `no sid cookie among ${cookies.map((each) => each.name).join(", ")}`);
    assert.deepEqual(
      cookies.map(({ name, httpOnly, sameSite, path }) => ({ name, httpOnly, sameSite, path })),
      cookies.map(({ name }) => ({ name, httpOnly: true, sameSite: "Strict", path: "/" })),
    );
    const readable = await page.evaluate(() => ({
      cookie: document.cookie,
      storage: JSON.stringify([{ ...localStorage }, { ...sessionStorage }]),
    }));
    for (const each of cookies) {
      assert.ok(!readable.cookie.includes(each.value), `document.cookie shows the ${each.name} cookie`);
    }
    // The CSRF tokens (the pre-session one of the login page, then the session's) are the
    // page's to read: 43 base64url characters too, but they sign nothing in.
    const known = fetched
      .filter((response) => new URL(response.url).pathname === "/api/session")
      .map((response) => (JSON.parse(response.body) as { csrfToken: string }).csrfToken);
    for (const [where, text] of [
      ["document.cookie", readable.cookie],
      ["storage", readable.storage],
    ] as const) {
      assert.deepEqual([...tokenShaped(text, JWT, known), ...tokenShaped(text, OPAQUE_TOKEN, known)], [], where);
    }
    const jsonUrls = fetched.filter((response) => response.json).map((response) => new URL(response.url).pathname);
    assert.ok(jsonUrls.includes("/api/session") && jsonUrls.includes("/api/sessions"), jsonUrls.join(", "));
    for (const response of fetched) {
      // Script and markup may hold 43-letter words; only JSON is searched for the opaque shape.
      const found = [
        ...tokenShaped(response.body, JWT, known),
        ...(response.json ? tokenShaped(response.body, OPAQUE_TOKEN, known) : []),
      ];
      assert.deepEqual(found, [], response.url);
      assert.ok(!response.body.includes(cookie.value), `${response.url} shows the session cookie's value`);
    }
  });
});

describe("CSRF", () => {
  const FOREIGN_ORIGIN = "https://attacker.example";

  async function csrfTokenOf(page: Page): Promise<string> {
    return ((await (await page.context().request.get("/api/session")).json()) as { csrfToken: string }).csrfToken;
  }

  async function listedSessions(page: Page): Promise<number> {
    const answer = await page.context().request.get("/api/sessions");
    assert.equal(answer.status(), 200);
    return ((await answer.json()) as { sessions: unknown[] }).sessions.length;
  }

  test("a state change without the CSRF token, or from another origin, is refused 403 and changes nothing", async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    const phone = await fixture.signedIn("iPhone", account);
    const phoneSession = await currentSessionId(phone);
    const request = desktop.context().request;
    const csrfToken = await csrfTokenOf(desktop);

    const refused = [
      await request.post("/api/sessions/revoke-others"),
      await request.post("/api/sessions/revoke-others", { headers: { "X-CSRF-Token": "not-the-token" } }),
      await request.post("/api/sessions/revoke-others", {
        headers: { "X-CSRF-Token": csrfToken, Origin: FOREIGN_ORIGIN },
      }),
      await request.delete(`/api/sessions/${phoneSession}`),
      await request.delete(`/api/sessions/${phoneSession}`, {
        headers: { "X-CSRF-Token": csrfToken, "Sec-Fetch-Site": "cross-site" },
      }),
    ].map((answer) => answer.status());

    assert.deepEqual(refused, [403, 403, 403, 403, 403]);
    assert.equal(await listedSessions(desktop), 2);
    // The same request with the token from this origin does act: the 403s were the checks.
    const allowed = await request.delete(`/api/sessions/${phoneSession}`, { headers: { "X-CSRF-Token": csrfToken } });
    assert.equal(allowed.status(), 204);
    assert.equal(await listedSessions(desktop), 1);
  });

  test("a login posted from another origin is refused 403 and signs nobody in", async () => {
    const account = await newUser();
    const page = await fixture.open("linuxChrome");
    await page.goto("/login");
    const request = page.context().request;
    const csrfToken = await csrfTokenOf(page);

    const answer = await request.post("/api/login", {
      headers: { "X-CSRF-Token": csrfToken, Origin: FOREIGN_ORIGIN },
      data: { email: account.email, password: account.password },
    });

    assert.equal(answer.status(), 403);
    assert.equal(((await (await request.get("/api/session")).json()) as { signedIn: boolean }).signedIn, false);
    await page.goto("/");
    await page.waitForURL((url) => url.pathname === "/login");
    assert.equal(await sessionItems(page).count(), 0);
  });
});
