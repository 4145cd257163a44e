// RevocationFeed: the deny-list of ended sessions a subscribed TokenVerifier keeps from
// WatchRevocations. Same rules as the Python client's RevocationWatch: it keeps its cursor,
// reconnects with backoff and resumes after it, and is current only while a caught-up
// stream keeps talking; the verifier fails closed otherwise.

import type { CallOptions } from "@connectrpc/connect";
import type { FeedEvent, Revocation } from "./client.js";
import { type AuthsvcError, toAuthsvcError } from "./errors.js";
import { ErrorReason } from "./gen/authsvc/v1/error_reason_pb.js";

/** No message for this long and the deny-list is stale (the N seconds). */
export const DEFAULT_STALE_AFTER_MS = 5_000;
// Reconnect delays, doubled per failure: short enough that a restarted server is followed
// again well inside the default staleness.
const FIRST_RETRY_MS = 100;
const LAST_RETRY_MS = 2_000;
// The one refusal that is not "resume from my cursor": the log no longer reaches back to it.
const CURSOR_EXPIRED = ErrorReason[ErrorReason.CURSOR_EXPIRED];

/** Where the feed comes from: an AuthClient with a service key. */
export interface FeedSource {
  watchRevocations(afterCursor: bigint, options?: CallOptions): AsyncIterable<FeedEvent>;
}

/** What a feed tells `onEvent`: for logs, metrics and tests, not for decisions. */
export type FeedStatus =
  /** A session ended; its tokens are refused from now on. */
  | { type: "revocation"; revocation: Revocation }
  /** A stream has caught up (its first heartbeat) after the feed was stale or new. */
  | { type: "current"; cursor: bigint }
  /** Nothing heard for `staleAfterMs`, or the snapshot must be taken again. */
  | { type: "stale"; cursor: bigint }
  /** The stream failed or ended (`error` undefined); it resumes after `cursor` in `retryInMs`. */
  | { type: "disconnected"; error: AuthsvcError | undefined; retryInMs: number; cursor: bigint };

export interface RevocationFeedOptions {
  /** No message for this long and the verifier fails closed. Default 5 000. */
  staleAfterMs?: number;
  /** Told each change of the feed's state (not heartbeats). Should not throw. */
  onEvent?: (status: FeedStatus) => void;
}

/** A feed's settings; what the verifier sets for its deny-list has defaults for the rest. */
export interface RevocationFeedSettings extends RevocationFeedOptions {
  /** The clock `tokensExpireBy` is compared with (the verifier's). Default: `() => new Date()`. */
  now?: () => Date;
  /** How long after `tokensExpireBy` an entry is still needed (the verifier's leeway). Default 0. */
  keepAfterExpiryMs?: number;
  /** The deny-list's key for a session id. Default: the id itself. */
  sessionKey?: (sessionId: string) => string;
}

/** Exponential backoff with jitter, so subscribers cut off together do not return together. */
function retryDelayMs(failures: number): number {
  const ceiling = Math.min(LAST_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.min(failures, 16));
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

/**
 * Follows the feed from construction until close(). SUBSCRIBER_TOO_SLOW, UNAVAILABLE, a
 * stream that ends or stays silent for `staleAfterMs`, and any other failure resume after
 * the cursor; CURSOR_EXPIRED starts again from a snapshot (cursor 0) and is not current
 * until the snapshot's heartbeat. A session stays denied until its tokens cannot pass.
 *
 * The subscribed TokenVerifier keeps one; a service that acts on endings itself (a backend
 * that tells its pages, say) follows the feed with one too, `onEvent` telling it each
 * `revocation`: `new RevocationFeed(clientWithServiceKey, { onEvent })`.
 */
export class RevocationFeed {
  readonly #source: FeedSource;
  readonly #now: () => Date;
  readonly #keepAfterExpiryMs: number;
  readonly #sessionKey: (sessionId: string) => string;
  readonly #staleAfterMs: number;
  readonly #onEvent: ((status: FeedStatus) => void) | undefined;
  readonly #closing = new AbortController();
  readonly #running: Promise<void>;
  /** Session key -> ms since the epoch after which its tokens cannot pass; arrival order. */
  readonly #denied = new Map<string, number>();
  #cursor = 0n;
  /** performance.now() of the last message of a caught-up stream; undefined: not current. */
  #heardAt: number | undefined;
  #staleTimer: NodeJS.Timeout | undefined;

  constructor(source: FeedSource, settings: RevocationFeedSettings = {}) {
    const staleAfterMs = settings.staleAfterMs ?? DEFAULT_STALE_AFTER_MS;
    if (!Number.isFinite(staleAfterMs) || staleAfterMs <= 0) {
      throw new RangeError(`staleAfterMs must be a positive number, got ${staleAfterMs}`);
    }
    this.#source = source;
    this.#now = settings.now ?? (() => new Date());
    this.#keepAfterExpiryMs = settings.keepAfterExpiryMs ?? 0;
    this.#sessionKey = settings.sessionKey ?? ((sessionId) => sessionId);
    this.#staleAfterMs = staleAfterMs;
    this.#onEvent = settings.onEvent;
    this.#running = this.#run();
  }

  /** A caught-up stream spoke within `staleAfterMs`; false before the first heartbeat. */
  get current(): boolean {
    // Asked of the clock, not only the timer, which runs late when the event loop is busy.
    return this.#heardAt !== undefined && performance.now() - this.#heardAt < this.#staleAfterMs;
  }

  get cursor(): bigint {
    return this.#cursor;
  }

  /** Whether the feed has said this session ended (true even while stale: ends are final). */
  isRevoked(sessionId: string): boolean {
    return this.#denied.has(this.#sessionKey(sessionId));
  }

  /** Cancels the stream and every timer; resolves once the feed has stopped. Idempotent. */
  async close(): Promise<void> {
    this.#closing.abort();
    await this.#running;
  }

  async #run(): Promise<void> {
    const closing = this.#closing.signal;
    let failures = 0;
    try {
      while (!closing.aborted) {
        let error: AuthsvcError | undefined;
        try {
          if (await this.#follow(closing)) {
            failures = 0;
          }
        } catch (caught) {
          error = toAuthsvcError(caught);
        }
        if (closing.aborted) {
          return;
        }
        if (error?.reason === CURSOR_EXPIRED) {
          // What came after the cursor is gone: a snapshot has every revocation that still
          // matters. What the deny-list holds stays: it is still true.
          this.#cursor = 0n;
          this.#goStale();
        }
        const retryInMs = retryDelayMs(failures);
        failures += 1;
        this.#tell({ type: "disconnected", error, retryInMs, cursor: this.#cursor });
        await sleep(retryInMs, closing);
      }
    } finally {
      clearTimeout(this.#staleTimer);
      this.#heardAt = undefined;
    }
  }

  /**
   * One stream, until it ends, fails, or is silent for `staleAfterMs` (a half-open
   * connection never fails by itself). Returns whether it caught up.
   */
  async #follow(closing: AbortSignal): Promise<boolean> {
    const stream = new AbortController();
    const stop = () => stream.abort();
    closing.addEventListener("abort", stop, { once: true });
    const silence = setTimeout(stop, this.#staleAfterMs);
    let caughtUp = false; // until this stream's first heartbeat, it is replaying
    try {
      for await (const event of this.#source.watchRevocations(this.#cursor, { signal: stream.signal })) {
        silence.refresh();
        if (event.cursor > this.#cursor) {
          this.#cursor = event.cursor;
        }
        if (event.kind === "revocation") {
          this.#deny(event);
        } else {
          caughtUp = true;
          this.#prune();
        }
        if (caughtUp) {
          this.#heard();
        }
      }
    } finally {
      clearTimeout(silence);
      closing.removeEventListener("abort", stop);
    }
    return caughtUp;
  }

  #deny(revocation: Revocation): void {
    const key = this.#sessionKey(revocation.sessionId);
    const until = revocation.tokensExpireBy.getTime() + this.#keepAfterExpiryMs;
    this.#denied.set(key, Math.max(until, this.#denied.get(key) ?? until));
    this.#tell({ type: "revocation", revocation });
  }

  #heard(): void {
    const wasCurrent = this.current;
    this.#heardAt = performance.now();
    clearTimeout(this.#staleTimer);
    this.#staleTimer = setTimeout(() => this.#goStale(), this.#staleAfterMs);
    if (!wasCurrent) {
      this.#tell({ type: "current", cursor: this.#cursor });
    }
  }

  #goStale(): void {
    clearTimeout(this.#staleTimer);
    if (this.#heardAt !== undefined) {
      this.#heardAt = undefined;
      this.#tell({ type: "stale", cursor: this.#cursor });
    }
  }

  // Entries arrive in cursor order, which is close to expiry order, so pruning stops at the
  // first entry still needed: a later one that expired earlier waits a little longer.
  #prune(): void {
    const nowMs = this.#now().getTime();
    for (const [key, until] of this.#denied) {
      if (until > nowMs) {
        break;
      }
      this.#denied.delete(key);
    }
  }

  #tell(status: FeedStatus): void {
    try {
      this.#onEvent?.(status);
    } catch (error) {
      // The listener's bug surfaces as an uncaught error; the feed itself goes on.
      queueMicrotask(() => {
        throw error;
      });
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts; leaves no timer behind. */
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
