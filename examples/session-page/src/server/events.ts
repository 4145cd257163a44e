// One Server-Sent Events stream to one tab: `session-ended` events and a comment heartbeat,
// which keeps proxies from closing a quiet connection and lets the server notice a gone tab.

import type { ServerResponse } from "node:http";
import { SESSION_ENDED_EVENT, type SessionEnded } from "../shared/api.js";

export const HEARTBEAT_MS = 15_000;
/** How soon a tab's EventSource reconnects after the connection drops. */
const RECONNECT_MS = 2_000;

export class EventStream {
  readonly #res: ServerResponse;
  readonly #heartbeat: NodeJS.Timeout;
  #open = true;

  /** Takes over `res`; `onClose` runs once, when the tab goes or close() is called. */
  constructor(res: ServerResponse, onClose: () => void) {
    this.#res = res;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-store",
      "X-Accel-Buffering": "no",
    });
    res.write(`retry: ${RECONNECT_MS}\n\n`);
    this.#heartbeat = setInterval(() => this.#write(": heartbeat\n\n"), HEARTBEAT_MS);
    res.once("close", () => {
      this.#stop();
      onClose();
    });
  }

  sessionEnded(event: SessionEnded): void {
    this.#write(`event: ${SESSION_ENDED_EVENT}\ndata: ${JSON.stringify(event)}\n\n`);
  }

  close(): void {
    if (this.#open) {
      this.#stop();
      this.#res.end();
    }
  }

  #write(text: string): void {
    if (this.#open) {
      this.#res.write(text);
    }
  }

  #stop(): void {
    this.#open = false;
    clearInterval(this.#heartbeat);
  }
}
