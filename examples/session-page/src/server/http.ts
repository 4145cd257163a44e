// Small helpers on node:http: security headers, JSON bodies with limits, JSON answers, cookies.

import type { IncomingMessage, ServerResponse } from "node:http";
import type { ErrorAnswer } from "../shared/api.js";

/** Request bodies beyond this are refused (413): the largest real one is a login form. */
export const MAX_BODY_BYTES = 8 * 1024;

// No inline script or style anywhere, so the policy can forbid both; inline SVG is markup.
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers every answer carries. */
export function setSecurityHeaders(res: ServerResponse): void {
  res.setHeader("Content-Security-Policy", CONTENT_SECURITY_POLICY);
  res.setHeader("X-Content-Type-Options", "nosniff");
  res.setHeader("Referrer-Policy", "no-referrer");
  res.setHeader("X-Frame-Options", "DENY");
  res.setHeader("Cross-Origin-Opener-Policy", "same-origin");
  res.setHeader("Cross-Origin-Resource-Policy", "same-origin");
  res.setHeader("Permissions-Policy", "camera=(), microphone=(), geolocation=()");
}

/** An answer the handler chose (status and error reason): thrown, turned into JSON by the router. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly answer: ErrorAnswer,
    readonly headers: Record<string, string> = {},
  ) {
    super(answer.message);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    "Cache-Control": "no-store",
  });
  res.end(text);
}

export function sendNoContent(res: ServerResponse, headers: Record<string, string> = {}): void {
  res.writeHead(204, { ...headers, "Cache-Control": "no-store" });
  res.end();
}

export function redirect(res: ServerResponse, location: string): void {
  res.writeHead(302, { Location: location, "Cache-Control": "no-store" });
  res.end();
}

/** The body as JSON: 415 unless it says application/json, 413 past MAX_BODY_BYTES, 400 if not JSON. */
export async function readJson(req: IncomingMessage): Promise<unknown> {
  const type = (req.headers["content-type"] ?? "").split(";", 1)[0]?.trim().toLowerCase();
  if (type !== "application/json") {
    throw new HttpError(415, { error: "UNSUPPORTED_MEDIA_TYPE", message: "Send the body as application/json." });
  }
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > MAX_BODY_BYTES) {
    throw new HttpError(413, { error: "BODY_TOO_LARGE", message: "The request body is too large." });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new HttpError(413, { error: "BODY_TOO_LARGE", message: "The request body is too large." });
    }
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
  } catch {
    throw new HttpError(400, { error: "INVALID_JSON", message: "The request body is not valid JSON." });
  }
}

/** Refuse a body where none is expected, without reading it (413 keeps it off the heap). */
export function refuseBody(req: IncomingMessage): void {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > MAX_BODY_BYTES || req.headers["transfer-encoding"] !== undefined) {
    throw new HttpError(413, { error: "BODY_TOO_LARGE", message: "This request takes no body." });
  }
}

/** The request's cookies; a malformed pair is skipped, never an error. */
export function readCookies(req: IncomingMessage): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const pair of (req.headers.cookie ?? "").split(";")) {
    const at = pair.indexOf("=");
    if (at > 0) {
      const name = pair.slice(0, at).trim();
      if (!cookies.has(name)) {
        cookies.set(name, pair.slice(at + 1).trim());
      }
    }
  }
  return cookies;
}

export interface CookieAttributes {
  secure: boolean;
  /** Seconds; undefined: a browser-session cookie. 0 deletes it. */
  maxAgeSeconds?: number;
}

/** A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/ always; Secure over TLS. */
export function cookie(name: string, value: string, { secure, maxAgeSeconds }: CookieAttributes): string {
  const parts = [`${name}=${value}`, "Path=/", "HttpOnly", "SameSite=Strict"];
  if (secure) {
    parts.push("Secure");
  }
  if (maxAgeSeconds !== undefined) {
    parts.push(`Max-Age=${maxAgeSeconds}`);
  }
  return parts.join("; ");
}
