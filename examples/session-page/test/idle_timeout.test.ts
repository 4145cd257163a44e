// Scenario 5 of the issue: with a short idle timeout, an idle page shows the dialog when its
// session lapses at the server, while a page whose person is active keeps its session past
// that point. Real time, a few seconds: the server's clock decides, and it cannot be faked.

import assert from "node:assert/strict";
import { test } from "node:test";
import { END_REASON_SENTENCES } from "#build/shared/end_reasons.js";
import { useStack } from "./fixture.js";
import { currentSessionId, endedDialog, itemById, newAccount, reloadList, sessionItems } from "./session_page.js";

const IDLE_TIMEOUT_SECONDS = 6;

const fixture = useStack({
  authsvcEnv: {
    AUTHSVC_SESSION_IDLE_TIMEOUT: `${IDLE_TIMEOUT_SECONDS}s`,
    // Access tokens shorter than the idle timeout, honoured to the second: listing sessions
    // past the idle deadline then needs a refresh, which only a live session gets.
    AUTHSVC_ACCESS_TOKEN_TTL: "2s",
    AUTHSVC_CLOCK_SKEW: "0s",
  },
});

test("an idle page shows the idle-timeout dialog, while an active page keeps its session", async () => {
  const account = newAccount();
  await fixture.stack.createUser(account.email, account.password);
  // The active page signs in first, so its idle deadline, had it been idle, comes first.
  const active = await fixture.signedIn("linuxChrome", account);
  const idle = await fixture.signedIn("iPhone", account);
  const idleSession = await currentSessionId(idle);
  let moving = true;
  const activity = (async () => {
    for (let step = 0; moving; step++) {
      await active.mouse.move(100 + (step % 2) * 200, 200);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  })();

  try {
    const dialog = endedDialog(idle);
    await dialog.waitFor({ timeout: (IDLE_TIMEOUT_SECONDS + 10) * 1000 });
    assert.equal((await dialog.locator("[data-testid=end-reason]").innerText()).trim(), END_REASON_SENTENCES.IDLE_TIMEOUT);
  } finally {
    moving = false;
    await activity;
  }

  assert.equal(await endedDialog(active).isVisible(), false);
  await reloadList(active);
  await currentSessionId(active);
  assert.equal(await itemById(active, idleSession).count(), 0);
  assert.equal(await sessionItems(active).count(), 1);
});
