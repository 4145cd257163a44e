// `npm run measure-signout-delay`: how long after a sign-out from another device the signed-out
// page shows its session-ended dialog. 20 times: a phone signs in; the desktop signs it out
// (DELETE /api/sessions/:id, which answers once authsvc's RevokeSession has); the delay runs
// from that answer to the moment the phone's page opened the dialog, as the page itself
// records it (a MutationObserver, so no polling error enters). Prints the median and worst.
// Timing is measured here, never asserted in a test.

import assert from "node:assert/strict";
import { startStack } from "#build/dev/stack.js";
import { launchChromium, newDevice } from "../test/browser.js";
import { currentSessionId, dialogOpenedAt, newAccount, recordDialogOpening, signIn } from "../test/session_page.js";

const RUNS = 20;

const stack = await startStack();
const browser = await launchChromium();
try {
  const account = newAccount();
  await stack.createUser(account.email, account.password);
  const desktop = await (await newDevice(browser, stack.pageUrl, "linuxChrome")).newPage();
  await signIn(desktop, account);
  const request = desktop.context().request;
  const { csrfToken } = (await (await request.get("/api/session")).json()) as { csrfToken: string };

  const delays: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const phoneContext = await newDevice(browser, stack.pageUrl, "iPhone");
    const phone = await phoneContext.newPage();
    await signIn(phone, account);
    const phoneSession = await currentSessionId(phone);
    await recordDialogOpening(phone);

    const answer = await request.delete(`/api/sessions/${phoneSession}`, { headers: { "X-CSRF-Token": csrfToken } });
    const answeredAt = Date.now();
    assert.equal(answer.status(), 204, await answer.text());

    delays.push((await dialogOpenedAt(phone)) - answeredAt);
    await phoneContext.close();
  }

  const sorted = [...delays].sort((a, b) => a - b);
  const median = ((sorted[(RUNS - 1) >> 1] ?? 0) + (sorted[RUNS >> 1] ?? 0)) / 2;
  console.log(`sign-out to dialog, ${RUNS} runs (ms): ${delays.join(" ")}`);
  console.log(`median ${median} ms, worst ${sorted.at(-1)} ms`);
} finally {
  await browser.close();
  await stack.stop();
}
