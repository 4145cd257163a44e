// Scenarios 1-4 and 8 of the issue: the device list, signing devices out, the dialog that
// a signed-out device shows by itself, and the page's accessibility.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AxeBuilder } from "@axe-core/playwright";
import type { Page, Request } from "playwright-core";
import { END_REASON_SENTENCES } from "#build/shared/end_reasons.js";
import { operatorRevokesUserSessions, useStack } from "./fixture.js";
import {
  confirm,
  confirmDialog,
  currentItem,
  currentSessionId,
  dialogOpenedAt,
  endedDialog,
  itemById,
  newAccount,
  recordDialogOpening,
  reloadList,
  sessionItems,
  signOutDevice,
  type Account,
} from "./session_page.js";

const fixture = useStack();

async function newUser(): Promise<Account> {
  const account = newAccount();
  await fixture.stack.createUser(account.email, account.password);
  return account;
}

/** The requests `page` makes from now on, each with the time this process saw it. */
function recordRequests(page: Page): { url: string; at: number }[] {
  const seen: { url: string; at: number }[] = [];
  page.on("request", (request: Request) => seen.push({ url: request.url(), at: Date.now() }));
  return seen;
}

/** The page's user id, from the BFF's GET /api/session (the page's own cookie). */
async function userIdOf(page: Page): Promise<string> {
  const state = (await (await page.context().request.get("/api/session")).json()) as { user?: { id: string } };
  assert.ok(state.user, "GET /api/session has no user while signed in");
  return state.user.id;
}

/** Axe's serious and critical findings against WCAG 2 A and AA, as "rule: targets". */
async function seriousViolations(page: Page): Promise<string[]> {
  const results = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa"]).analyze();
  return results.violations
    .filter((violation) => violation.impact === "serious" || violation.impact === "critical")
    .map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`);
}

describe("the device list", () => {
  test("after sign-in it lists this session with the current badge, a desktop icon, Chrome and Linux", async () => {
    const account = await newUser();

    const page = await fixture.signedIn("linuxChrome", account);

    assert.equal(await sessionItems(page).count(), 1);
    const item = currentItem(page);
    assert.equal(await item.getAttribute("data-device-type"), "desktop");
    assert.equal(await item.locator("svg[aria-label]").getAttribute("aria-label"), "Desktop");
    assert.equal((await item.locator("[data-testid=current-badge]").textContent())?.trim(), "This device");
    const text = await item.innerText();
    assert.match(text, /Chrome 156 on Linux/);
    assert.match(text, /127\.0\.0\.1/);
    // The stack's test GeoIP database places loopback in Wellington (tests/geoip_database.py).
    assert.match(text, /Wellington, NZ/);
  });

  test("a sign-in from an iPhone appears with a mobile icon and iOS", async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    const phone = await fixture.signedIn("iPhone", account);
    const phoneSession = await currentSessionId(phone);

    await reloadList(desktop);

    assert.equal(await sessionItems(desktop).count(), 2);
    const item = itemById(desktop, phoneSession);
    assert.equal(await item.getAttribute("data-device-type"), "mobile");
    assert.equal(await item.locator("svg[aria-label]").getAttribute("aria-label"), "Mobile phone");
    const text = await item.innerText();
    assert.match(text, /Mobile Safari 17 on iOS/);
    assert.match(text, /Last active/);
    assert.equal(await item.locator("[data-testid=current-badge]").count(), 0);
  });

  test("it shows the loading state until the server's list arrives", async () => {
    const page = await fixture.signedIn("linuxChrome", await newUser());
    // The real request, held back until the loading state has been seen.
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route("**/api/sessions", async (route) => {
      await held;
      await route.continue();
    });

    await page.reload();

    await page.locator("[data-testid=loading]").waitFor();
    assert.equal(await sessionItems(page).count(), 0);
    release();
    await currentItem(page).waitFor();
    await page.locator("[data-testid=loading]").waitFor({ state: "hidden" });
  });
});

describe("signing devices out", () => {
  test("a device signed out through the confirmation leaves the list and shows why by itself, pushed", async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    const phone = await fixture.signedIn("iPhone", account);
    const phoneSession = await currentSessionId(phone);
    await reloadList(desktop);
    await recordDialogOpening(phone);
    const phoneRequests = recordRequests(phone);

    const revokedFrom = Date.now();
    await signOutDevice(desktop, phoneSession);

    await itemById(desktop, phoneSession).waitFor({ state: "detached" });
    assert.equal(await sessionItems(desktop).count(), 1);
    const dialog = endedDialog(phone);
    await dialog.waitFor();
    assert.equal(await dialog.getByRole("heading").innerText(), "Your session has ended");
    assert.equal((await dialog.locator("[data-testid=end-reason]").innerText()).trim(), END_REASON_SENTENCES.USER_REVOKED);
    await dialog.getByRole("button", { name: "Log in again" }).waitFor();
    await dialog.getByRole("button", { name: "Close" }).waitFor();
    // Pushed, not polled: the phone asked nothing between the sign-out and its dialog.
    const openedAt = await dialogOpenedAt(phone);
    assert.deepEqual(
      phoneRequests.filter((request) => request.at >= revokedFrom && request.at <= openedAt).map((request) => request.url),
      [],
    );
  });

  test("an operator's sign-out of a user shows that user's page the administrator's reason, pushed", async () => {
    const account = await newUser();
    const page = await fixture.signedIn("linuxChrome", account);
    const userId = await userIdOf(page);
    await recordDialogOpening(page);
    const requests = recordRequests(page);

    const revokedFrom = Date.now();
    await operatorRevokesUserSessions(fixture.stack, userId);

    const dialog = endedDialog(page);
    await dialog.waitFor();
    assert.equal((await dialog.locator("[data-testid=end-reason]").innerText()).trim(), END_REASON_SENTENCES.ADMIN_REVOKED);
    const openedAt = await dialogOpenedAt(page);
    assert.deepEqual(
      requests.filter((request) => request.at >= revokedFrom && request.at <= openedAt).map((request) => request.url),
      [],
    );
  });

  test('"Log in again" hands the reason to the login page, which says why the session ended', async () => {
    const page = await fixture.signedIn("linuxChrome", await newUser());
    const userId = await userIdOf(page);
    await operatorRevokesUserSessions(fixture.stack, userId);
    const dialog = endedDialog(page);
    await dialog.waitFor();

    await dialog.getByRole("button", { name: "Log in again" }).click();

    await page.waitForURL((url) => url.pathname === "/login");
    assert.equal(new URL(page.url()).searchParams.get("expired"), "ADMIN_REVOKED");
    const notice = page.locator("[data-testid=expired-notice]");
    const text = await notice.innerText();
    assert.ok(text.includes(`Your session ended: ${END_REASON_SENTENCES.ADMIN_REVOKED}`), text);
    await page.locator("form[data-testid=login-form]").waitFor();
  });

  test("cancelling or escaping the confirmation signs nothing out", async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    const phone = await fixture.signedIn("iPhone", account);
    const phoneSession = await currentSessionId(phone);
    await reloadList(desktop);

    await itemById(desktop, phoneSession).getByRole("button", { name: "Sign out" }).click();
    await confirmDialog(desktop).getByRole("button", { name: "Cancel" }).click();
    await desktop.getByRole("button", { name: "Sign out all other devices" }).click();
    await confirmDialog(desktop).waitFor();
    await desktop.keyboard.press("Escape");

    await confirmDialog(desktop).waitFor({ state: "hidden" });
    await reloadList(desktop);
    assert.equal(await sessionItems(desktop).count(), 2);
    assert.equal(await endedDialog(phone).isVisible(), false);
  });

  test('"Sign out all other devices" leaves only the current session', async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    await fixture.signedIn("iPhone", account);
    await fixture.signedIn("iPad", account);
    const desktopSession = await currentSessionId(desktop);
    await reloadList(desktop);
    assert.equal(await sessionItems(desktop).count(), 3);

    await desktop.getByRole("button", { name: "Sign out all other devices" }).click();
    const answer = await confirm(desktop);

    assert.deepEqual(await answer.json(), { revoked: 2 });
    await reloadList(desktop);
    assert.deepEqual(await sessionItems(desktop).evaluateAll((items) => items.map((item) => item.dataset["sessionId"])), [
      desktopSession,
    ]);
  });
});

describe("accessibility", () => {
  test("axe finds no serious or critical WCAG 2 A/AA violation in the device list", async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    await fixture.signedIn("iPhone", account);
    await reloadList(desktop);

    assert.deepEqual(await seriousViolations(desktop), []);
  });

  test("the session-ended dialog passes axe, keeps focus inside on Tab and Shift+Tab, and closes on Escape", async () => {
    const account = await newUser();
    const desktop = await fixture.signedIn("linuxChrome", account);
    const phone = await fixture.signedIn("iPhone", account);
    const phoneSession = await currentSessionId(phone);
    await reloadList(desktop);
    await signOutDevice(desktop, phoneSession);
    const dialog = endedDialog(phone);
    await dialog.waitFor();

    assert.deepEqual(await seriousViolations(phone), []);
    const focused: string[] = [];
    for (const key of ["Tab", "Tab", "Tab", "Tab", "Shift+Tab", "Shift+Tab", "Shift+Tab", "Shift+Tab"]) {
      await phone.keyboard.press(key);
      focused.push(
        await phone.evaluate(() => {
          const active = document.activeElement;
          const inside = active?.closest("dialog[data-testid=session-ended-dialog]") !== null;
          return inside ? (active?.textContent ?? "").trim() : `outside: ${active?.tagName ?? "nothing"}`;
        }),
      );
    }
    assert.deepEqual(
      focused.filter((name) => name.startsWith("outside")),
      [],
    );
    // Focus moved round both buttons, not stuck on one.
    assert.ok(focused.includes("Log in again") && focused.includes("Close"), focused.join(" | "));
    await phone.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
  });
});
