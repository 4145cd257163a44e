// `npm run screenshots`: the README's two pictures, taken from the real page in Debian's
// Chromium against a real stack: docs/device-list.png (three devices signed in) and
// docs/session-ended-dialog.png (a device signed out from another one).

import path from "node:path";
import { fileURLToPath } from "node:url";
import { startStack } from "#build/dev/stack.js";
import { launchChromium, newDevice, type Device } from "../test/browser.js";
import {
  currentSessionId,
  endedDialog,
  newAccount,
  reloadList,
  sessionItems,
  signIn,
  signOutDevice,
} from "../test/session_page.js";

// This file runs as build/checks/scripts/screenshots.js; docs/ is beside build/.
const DOCS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../docs");

const stack = await startStack();
const browser = await launchChromium();
try {
  const account = newAccount();
  await stack.createUser(account.email, account.password);
  const signedIn = async (device: Device) => {
    const context = await newDevice(browser, stack.pageUrl, device);
    const page = await context.newPage();
    await signIn(page, account);
    return page;
  };

  const desktop = await signedIn("linuxChrome");
  await signedIn("iPhone");
  await signedIn("iPad");
  await reloadList(desktop);
  await sessionItems(desktop).nth(2).waitFor();
  const deviceList = path.join(DOCS, "device-list.png");
  await desktop.screenshot({ path: deviceList, fullPage: true });
  console.log(`wrote ${deviceList}`);

  const other = await signedIn("linuxChrome");
  const otherSession = await currentSessionId(other);
  await reloadList(desktop);
  await signOutDevice(desktop, otherSession);
  await endedDialog(other).waitFor();
  // Past the dialog's opening transition, if it has one.
  await other.waitForTimeout(500);
  const dialog = path.join(DOCS, "session-ended-dialog.png");
  await other.screenshot({ path: dialog });
  console.log(`wrote ${dialog}`);
} finally {
  await browser.close();
  await stack.stop();
}
