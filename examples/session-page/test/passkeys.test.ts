// Passkeys in the page, on Chromium's virtual authenticator (the DevTools WebAuthn domain):
// add a passkey on the device page, sign out, sign in with it alone.

import assert from "node:assert/strict";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { BrowserContext, CDPSession, Page } from "playwright-core";
import { newDevice } from "./browser.js";
import { useStack } from "./fixture.js";
import {
  currentItem,
  currentSessionId,
  newAccount,
  sessionList,
  signIn,
  submitLogin,
  type Account,
} from "./session_page.js";

const fixture = useStack();

/** A fresh profile on the page's passkey origin (http://localhost:<port>). */
async function openOnPasskeyOrigin(contexts: BrowserContext[]): Promise<Page> {
  const context = await newDevice(fixture.browser, fixture.stack.passkeyPageUrl, "linuxChrome");
  contexts.push(context);
  context.setDefaultTimeout(10_000);
  return context.newPage();
}

/**
 * A platform authenticator for `page`, as a laptop's: CTAP2 over the internal transport,
 * keeping discoverable credentials, verifying its user (and it always does, untouched).
 */
async function addVirtualAuthenticator(page: Page): Promise<{ cdp: CDPSession; authenticatorId: string }> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, authenticatorId };
}

async function newUser(): Promise<Account> {
  const account = newAccount();
  await fixture.stack.createUser(account.email, account.password);
  return account;
}

async function addPasskeyOnDevicePage(page: Page): Promise<void> {
  const [answer] = await Promise.all([
    page.waitForResponse((response) => new URL(response.url()).pathname === "/api/passkeys"),
    page.getByRole("button", { name: "Add a passkey" }).click(),
  ]);
  if (answer.status() !== 201) {
    assert.fail(`adding the passkey answered ${answer.status()}: ${await answer.text()}`);
  }
  await page.locator("[data-testid=passkey-status]").filter({ hasText: "Passkey added" }).waitFor();
}

describe("passkeys", () => {
  test("a passkey added on the device page signs its owner in alone, after signing out", async () => {
    const contexts: BrowserContext[] = [];
    try {
      const account = await newUser();
      const page = await openOnPasskeyOrigin(contexts);
      const { cdp, authenticatorId } = await addVirtualAuthenticator(page);
      await signIn(page, account);
      const passwordSession = await currentSessionId(page);
      assert.equal(await currentItem(page).locator("[data-testid=two-factor-badge]").count(), 0);

      await addPasskeyOnDevicePage(page);
      const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
      assert.equal(credentials.length, 1);
      assert.equal(credentials[0]?.isResidentCredential, true);
      assert.equal(credentials[0]?.rpId, "localhost");

      await page.getByRole("button", { name: "Log out" }).click();
      await page.waitForURL((url) => url.pathname === "/login");
      // The password alone no longer makes a session: the account has a second factor now.
      const refused = await submitLogin(page, account);
      assert.equal(refused.status(), 401);
      assert.equal(((await refused.json()) as { error: string }).error, "SECOND_FACTOR_REQUIRED");
      const [answer] = await Promise.all([
        page.waitForResponse((response) => new URL(response.url()).pathname === "/api/passkey-login"),
        page.getByRole("button", { name: "Sign in with a passkey" }).click(),
      ]);
      if (answer.status() !== 204) {
        assert.fail(`passkey sign-in answered ${answer.status()}: ${await answer.text()}`);
      }
      await sessionList(page).waitFor();

      const passkeySession = await currentSessionId(page);
      assert.notEqual(passkeySession, passwordSession);
      // A passkey alone is two factors: the list shows the session at AAL2.
      await currentItem(page).locator("[data-testid=two-factor-badge]").waitFor();
      // The authenticator signed once for the sign-in: its counter moved past registration's.
      const after = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
      assert.ok((after.credentials[0]?.signCount ?? 0) > (credentials[0]?.signCount ?? 0));
    } finally {
      await Promise.all(contexts.map((context) => context.close()));
    }
  });

  test("without a passkey of this site, the sign-in says none was used and signs nobody in", async () => {
    const contexts: BrowserContext[] = [];
    try {
      const page = await openOnPasskeyOrigin(contexts);
      await addVirtualAuthenticator(page);
      await page.goto("/login");

      await page.getByRole("button", { name: "Sign in with a passkey" }).click();

      const alert = page.locator("[role=alert][data-testid=login-error]");
      await alert.filter({ hasText: "No passkey was used." }).waitFor();
      assert.equal(new URL(page.url()).pathname, "/login");
    } finally {
      await Promise.all(contexts.map((context) => context.close()));
    }
  });

  test("a passkey this site never registered is refused with a clear message and signs nobody in", async () => {
    const contexts: BrowserContext[] = [];
    try {
      const page = await openOnPasskeyOrigin(contexts);
      const { cdp, authenticatorId } = await addVirtualAuthenticator(page);
      // A discoverable credential for this relying party that authsvc has never seen.
      const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
      await cdp.send("WebAuthn.addCredential", {
        authenticatorId,
        credential: {
          credentialId: randomBytes(16).toString("base64"),
          isResidentCredential: true,
          rpId: "localhost",
          privateKey: privateKey.export({ format: "der", type: "pkcs8" }).toString("base64"),
          userHandle: randomBytes(16).toString("base64"),
          signCount: 0,
        },
      });
      await page.goto("/login");

      const [answer] = await Promise.all([
        page.waitForResponse((response) => new URL(response.url()).pathname === "/api/passkey-login"),
        page.getByRole("button", { name: "Sign in with a passkey" }).click(),
      ]);

      assert.equal(answer.status(), 401);
      assert.equal(((await answer.json()) as { error: string }).error, "SECOND_FACTOR_INVALID");
      const alert = page.locator("[role=alert][data-testid=login-error]");
      await alert.filter({ hasText: "The passkey was not accepted." }).waitFor();
      assert.equal(new URL(page.url()).pathname, "/login");
    } finally {
      await Promise.all(contexts.map((context) => context.close()));
    }
  });

  test("the passkey endpoints refuse a request without the CSRF token, or from another origin", async () => {
    const contexts: BrowserContext[] = [];
    try {
      const account = await newUser();
      const page = await openOnPasskeyOrigin(contexts);
      await signIn(page, account);
      const request = page.context().request;
      const { csrfToken } = (await (await request.get("/api/session")).json()) as { csrfToken: string };
      const foreign = { "X-CSRF-Token": csrfToken, Origin: "https://attacker.example" };

      const refused = [
        await request.post("/api/passkeys/options"),
        await request.post("/api/passkeys/options", { headers: foreign }),
        await request.post("/api/passkeys", { data: { challengeId: crypto.randomUUID(), credential: {} } }),
        await request.post("/api/passkey-login/options"),
        await request.post("/api/passkey-login", { data: { challengeId: crypto.randomUUID(), credential: {} } }),
      ];

      for (const answer of refused) {
        assert.equal(answer.status(), 403, answer.url());
        assert.equal(((await answer.json()) as { error: string }).error, "CSRF_CHECK_FAILED");
      }
    } finally {
      await Promise.all(contexts.map((context) => context.close()));
    }
  });
});
