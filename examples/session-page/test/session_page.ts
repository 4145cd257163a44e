// The page as the tests see it: the DOM contract of the README (data-testid, roles, labels),
// in one place, so a scenario reads as what a person does.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { Locator, Page, Response } from "playwright-core";

export interface Account {
  email: string;
  password: string;
}

/** A fresh, unique account's credentials (create it with stack.createUser). */
export function newAccount(): Account {
  return { email: `user-${randomUUID()}@example.com`, password: "correct horse battery staple" };
}

/** Fill the login form and press "Sign in"; resolves with the BFF's answer to the POST. */
export async function submitLogin(page: Page, account: Account): Promise<Response> {
  const form = page.locator("form[data-testid=login-form]");
  await form.getByLabel("Email", { exact: true }).fill(account.email);
  await form.getByLabel("Password", { exact: true }).fill(account.password);
  const [answer] = await Promise.all([
    page.waitForResponse((response) => new URL(response.url()).pathname === "/api/login"),
    form.getByRole("button", { name: "Sign in" }).click(),
  ]);
  return answer;
}

/** Sign in through the login page and wait for the device list to show. */
export async function signIn(page: Page, account: Account): Promise<void> {
  await page.goto("/login");
  const answer = await submitLogin(page, account);
  if (answer.status() !== 204) {
    assert.fail(`login answered ${answer.status()}: ${await answer.text()}`);
  }
  await sessionList(page).waitFor();
}

export function sessionList(page: Page): Locator {
  return page.locator("ul[data-testid=session-list]");
}

export function sessionItems(page: Page): Locator {
  return sessionList(page).locator("li[data-testid=session-item]");
}

/** The list's item for the session this page is signed in with (the one with the badge). */
export function currentItem(page: Page): Locator {
  return sessionItems(page).filter({ has: page.locator("[data-testid=current-badge]") });
}

export function itemById(page: Page, sessionId: string): Locator {
  return sessionList(page).locator(`li[data-testid=session-item][data-session-id="${sessionId}"]`);
}

/** The id of the session this page is signed in with, as its list says. */
export async function currentSessionId(page: Page): Promise<string> {
  await assertOne(currentItem(page));
  const id = await currentItem(page).getAttribute("data-session-id");
  assert.ok(id, "the current session's item has no data-session-id");
  return id;
}

/** Reload and wait for the list (fresh from the server). */
export async function reloadList(page: Page): Promise<void> {
  await page.reload();
  await sessionList(page).waitFor();
}

export function confirmDialog(page: Page): Locator {
  return page.locator("dialog[data-testid=confirm-dialog]");
}

export function endedDialog(page: Page): Locator {
  return page.locator("dialog[data-testid=session-ended-dialog]");
}

/** Press "Sign out" on `sessionId`'s item, then "Sign out" in the confirmation. */
export async function signOutDevice(page: Page, sessionId: string): Promise<void> {
  await itemById(page, sessionId).getByRole("button", { name: "Sign out" }).click();
  await confirm(page);
}

/** Press "Sign out" in the open confirmation and wait for the BFF's answer. */
export async function confirm(page: Page): Promise<Response> {
  const dialog = confirmDialog(page);
  await dialog.waitFor();
  const [answer] = await Promise.all([
    page.waitForResponse((response) => response.request().method() !== "GET" && response.url().includes("/api/sessions")),
    dialog.getByRole("button", { name: "Sign out", exact: true }).click(),
  ]);
  if (!answer.ok()) {
    assert.fail(`sign-out answered ${answer.status()}: ${await answer.text()}`);
  }
  return answer;
}

/**
 * From now on, record in the page the wall-clock time (Date.now(), the clock this process
 * reads too) at which the session-ended dialog first opens; read it with dialogOpenedAt.
 * A MutationObserver's callback runs right after the change, so no polling error enters.
 */
export async function recordDialogOpening(page: Page): Promise<void> {
  await page.evaluate(() => {
    const record = window as unknown as { sessionEndedDialogOpenedAt?: number };
    delete record.sessionEndedDialogOpenedAt;
    const observer = new MutationObserver(() => {
      if (document.querySelector("dialog[data-testid=session-ended-dialog][open]") !== null) {
        record.sessionEndedDialogOpenedAt = Date.now();
        observer.disconnect();
      }
    });
    observer.observe(document.documentElement, { subtree: true, childList: true, attributes: true });
  });
}

/** When the session-ended dialog opened (recordDialogOpening), once it has. */
export async function dialogOpenedAt(page: Page): Promise<number> {
  await endedDialog(page).waitFor();
  const handle = await page.waitForFunction(
    () => (window as unknown as { sessionEndedDialogOpenedAt?: number }).sessionEndedDialogOpenedAt,
  );
  return (await handle.jsonValue()) as number;
}

/** Fails unless `locator` matches exactly one element, now or within the default wait. */
export async function assertOne(locator: Locator): Promise<void> {
  await locator.first().waitFor();
  assert.equal(await locator.count(), 1);
}
