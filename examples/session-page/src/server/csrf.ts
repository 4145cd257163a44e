// CSRF defences for every POST and DELETE, two independent ones:
// - a synchronizer token: HMAC-SHA256 of the browser's session id (or, before sign-in, of
//   its pre-session id) under a server secret, handed to the page by GET /api/session and
//   sent back in X-CSRF-Token; another site can neither read it nor compute it;
// - the browser's own word on where the request came from: Sec-Fetch-Site must be
//   same-origin, and Origin, when sent, must be this site's.

import { createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { CSRF_HEADER } from "../shared/api.js";
import { HttpError } from "./http.js";

export type CsrfScope = "session" | "pre-session";

export class Csrf {
  readonly #secret: Buffer;

  constructor(secret: Buffer) {
    this.#secret = secret;
  }

  /** The token for a browser holding `id` (its session or pre-session cookie). */
  token(scope: CsrfScope, id: string): string {
    return createHmac("sha256", this.#secret).update(`${scope}:${id}`).digest("base64url");
  }

  /**
   * 403 unless the request came from `origin` (as far as the browser says) and carries the
   * token of `id`. The compare takes the same time wherever the strings differ.
   */
  check(req: IncomingMessage, origin: string, scope: CsrfScope, id: string | undefined): void {
    const site = req.headers["sec-fetch-site"];
    const from = req.headers.origin;
    if ((site !== undefined && site !== "same-origin") || (from !== undefined && from !== origin)) {
      throw forbidden("The request did not come from this site.");
    }
    const sent = req.headers[CSRF_HEADER.toLowerCase()];
    if (id === undefined || typeof sent !== "string") {
      throw forbidden("The request lacks its CSRF token; reload the page.");
    }
    const expected = Buffer.from(this.token(scope, id));
    const given = Buffer.from(sent);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw forbidden("The request's CSRF token is wrong; reload the page.");
    }
  }
}

function forbidden(message: string): HttpError {
  return new HttpError(403, { error: "CSRF_CHECK_FAILED", message });
}
