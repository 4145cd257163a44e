// Follows authsvc's revocation feed with the BFF's service key, for as long as the BFF runs:
// every session that ends anywhere (another device, an operator, a password change) is
// reported within about a second. The client's RevocationFeed does the following: it resumes
// after its cursor when a stream fails, starts again from a snapshot when the cursor has
// expired, and replaces a stream that stays silent (a half-open connection never fails).

import { type AuthClient, type Revocation, RevocationFeed } from "@authsvc/client";
import { log } from "./log.js";

export function followRevocations(client: AuthClient, onRevocation: (revocation: Revocation) => void): RevocationFeed {
  return new RevocationFeed(client, {
    onEvent: (status) => {
      switch (status.type) {
        case "revocation":
          onRevocation(status.revocation);
          return;
        case "current":
        case "stale":
          log(`revocation_feed_${status.type}`, { cursor: String(status.cursor) });
          return;
        case "disconnected":
          log("revocation_feed_disconnected", {
            reason: status.error?.reason || status.error?.message || "stream ended",
            retry_in_ms: status.retryInMs,
          });
          return;
      }
    },
  });
}
