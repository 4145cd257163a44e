// `npm run measure-signout-delay`: how long after a sign-out from another device the signed-out
// page shows its session-ended dialog. 20 times: a phone signs in; the desktop signs it out
// (DELETE /api/sessions/:id, which answers once authsvc's RevokeSession has); the delay runs
// from that answer (and, as an upper bound, from the request's sending) to the moment the
// phone's page opened the dialog, as the page itself records it (a MutationObserver, so no
// polling error enters). Prints the median and worst of each.
// Timing is measured here, never asserted in a test.

import assert from "node:assert/strict";
import { startStack } from "#build/dev/stack.js";
import { launchChromium, newDevice } from "../test/browser.js";
import { currentSessionId, dialogOpenedAt, newAccount, recordDialogOpening, signIn } from "../test/session_page.js";

const RUNS = 20;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return ((sorted[(sorted.length - 1) >> 1] ?? 0) + (sorted[sorted.length >> 1] ?? 0)) / 2;
}

const stack = await startStack();
const browser = await launchChromium();
try {
  const account = newAccount();
  await stack.createUser(account.email, account.password);
  const desktop = await (await newDevice(browser, stack.pageUrl, "linuxChrome")).newPage();
  await signIn(desktop, account);
  // The desktop's sign-outs are sent by this process itself (Node's fetch, with the desktop's
  // cookie and CSRF token), so the answer's arrival is timed without a browser in between.
  const cookie = (await desktop.context().cookies()).map(({ name, value }) => `${name}=${value}`).join("; ");
  const headers = { cookie };
  const state = (await (await fetch(new URL("/api/session", stack.pageUrl), { headers })).json()) as {
    csrfToken: string;
  };

  const fromAnswer: number[] = [];
  const fromRequest: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const phoneContext = await newDevice(browser, stack.pageUrl, "iPhone");
    const phone = await phoneContext.newPage();
    await signIn(phone, account);
    const phoneSession = await currentSessionId(phone);
    await recordDialogOpening(phone);

    const sentAt = Date.now();
    const answer = await fetch(new URL(`/api/sessions/${phoneSession}`, stack.pageUrl), {
      method: "DELETE",
      headers: { ...headers, "X-CSRF-Token": state.csrfToken },
    });
    const answeredAt = Date.now();
    assert.equal(answer.status, 204, await answer.text());

    const openedAt = await dialogOpenedAt(phone);
    fromAnswer.push(openedAt - answeredAt);
    fromRequest.push(openedAt - sentAt);
    await phoneContext.close();
  }

  // Negative: the page had its dialog before the desktop had its answer (the feed was faster).
  console.log(`sign-out answer to dialog, ms: ${fromAnswer.join(" ")}`);
  console.log(`  median ${median(fromAnswer)} ms, worst ${Math.max(...fromAnswer)} ms`);
  console.log(`sign-out request sent to dialog, ms: ${fromRequest.join(" ")}`);
  console.log(`  median ${median(fromRequest)} ms, worst ${Math.max(...fromRequest)} ms`);
} finally {
  await browser.close();
  await stack.stop();
}
