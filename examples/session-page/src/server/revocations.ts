// Follows authsvc's revocation feed (WatchRevocations) with the BFF's service key, for as
// long as the BFF runs: every session that ends anywhere (another device, an operator, a
// password change) is reported within about a second. Resumes after its cursor when the
// stream fails; starts again from a snapshot when the cursor has expired.

import { type AuthClient, CursorExpired, type Revocation } from "@authsvc/client";
import { log } from "./log.js";

const FIRST_RETRY_MS = 100;
const LAST_RETRY_MS = 2_000;

export class RevocationFollower {
  readonly #client: AuthClient;
  readonly #onRevocation: (revocation: Revocation) => void;
  readonly #closing = new AbortController();
  readonly #running: Promise<void>;
  #cursor = 0n;

  constructor(client: AuthClient, onRevocation: (revocation: Revocation) => void) {
    this.#client = client;
    this.#onRevocation = onRevocation;
    this.#running = this.#run();
  }

  /** Cancel the stream and the backoff timer; resolves once the loop has stopped. */
  async close(): Promise<void> {
    this.#closing.abort();
    await this.#running;
  }

  async #run(): Promise<void> {
    const { signal } = this.#closing;
    let failures = 0;
    while (!signal.aborted) {
      try {
        for await (const event of this.#client.watchRevocations(this.#cursor, { signal })) {
          if (event.cursor > this.#cursor) {
            this.#cursor = event.cursor;
          }
          if (failures > 0 && event.kind === "heartbeat") {
            log("revocation_feed_current", { cursor: String(this.#cursor) });
            failures = 0;
          }
          if (event.kind === "revocation") {
            this.#onRevocation(event);
          }
        }
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        if (error instanceof CursorExpired) {
          this.#cursor = 0n;
        }
        log("revocation_feed_disconnected", { reason: (error as { reason?: string }).reason ?? String(error) });
      }
      failures += 1;
      // Exponential backoff with jitter, so BFF replicas cut off together do not return together.
      const ceiling = Math.min(LAST_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(failures, 16));
      await sleep(Math.round(ceiling * (0.5 + Math.random() / 2)), signal);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
