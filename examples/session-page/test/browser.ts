// Debian's Chromium (scripts/install_chromium puts it at /usr/bin/chromium) driven by
// playwright-core: Playwright's own browser builds cannot be downloaded here.

import { chromium, type Browser, type BrowserContext } from "playwright-core";

/** Where scripts/install_chromium installs it; CHROMIUM overrides, as it does there. */
const CHROMIUM = process.env["CHROMIUM"] || "/usr/bin/chromium";

const CHROMIUM_ARGS = [
  "--headless",
  // CI runs as root, where Chromium's sandbox cannot start.
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  // Nothing reaches out to Google's services: there is no internet here, and each attempt
  // would cost time.
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** The browsers the scenarios sign in from, as the server will see them. */
export const DEVICES = {
  linuxChrome: {
    userAgent:
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
    viewport: { width: 1280, height: 800 },
  },
  iPhone: {
    userAgent:
      "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) " +
      "Version/17.0 Mobile/15E148 Safari/604.1",
    viewport: { width: 390, height: 844 },
    isMobile: true,
    hasTouch: true,
  },
  iPad: {
    userAgent:
      "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) " +
      "Version/17.0 Mobile/15E148 Safari/604.1",
    viewport: { width: 820, height: 1180 },
    isMobile: true,
    hasTouch: true,
  },
} as const;

export type Device = keyof typeof DEVICES;

/** A fresh browser profile (its own cookie jar) that presents itself as `device`. */
export async function newDevice(browser: Browser, baseURL: string, device: Device): Promise<BrowserContext> {
  return browser.newContext({ ...DEVICES[device], baseURL });
}
