// Reports that the person is active (mouse, keyboard, scroll, touch) to the BFF, which
// slides the session; at most once per the interval the BFF chose, and never while idle.

import { call } from "./api.js";

const EVENTS = ["pointermove", "pointerdown", "keydown", "wheel", "scroll", "touchstart"] as const;

/** Start reporting; the returned function stops it (when the session has ended). */
export function reportActivity(intervalMs: number, onFailure: (error: unknown) => void): () => void {
  // Loading the page was a request of its own: the next report is due an interval later.
  let lastReport = Date.now();
  const onActivity = () => {
    const now = Date.now();
    if (now - lastReport < intervalMs) {
      return;
    }
    lastReport = now;
    call("POST", "/api/activity").catch(onFailure);
  };
  for (const name of EVENTS) {
    window.addEventListener(name, onActivity, { passive: true, capture: true });
  }
  return () => {
    for (const name of EVENTS) {
      window.removeEventListener(name, onActivity, { capture: true });
    }
  };
}
