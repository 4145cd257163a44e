// The page's calls to its BFF: same-origin fetch, the session cookie sent by the browser
// (the page never sees it), the CSRF token from GET /api/session on every POST and DELETE.

import { CSRF_HEADER, type ErrorAnswer, type SessionState } from "../shared/api.js";

/** An answer other than 2xx, with the BFF's error reason (authsvc's ErrorInfo reason). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly answer: ErrorAnswer,
  ) {
    super(answer.message);
  }
}

let csrfToken: string | undefined;

/** The browser's session as the BFF sees it; also refreshes the CSRF token. */
export async function fetchSession(): Promise<SessionState> {
  const state = (await call("GET", "/api/session")) as SessionState;
  csrfToken = state.csrfToken;
  return state;
}

/** GET, POST or DELETE `path`; resolves to the JSON answer (undefined for 204). */
export async function call(method: "GET" | "POST" | "DELETE", path: string, body?: unknown): Promise<unknown> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (method !== "GET") {
    if (csrfToken === undefined) {
      await fetchSession();
    }
    headers[CSRF_HEADER] = csrfToken ?? "";
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: "same-origin",
      cache: "no-store",
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
  } catch {
    throw new ApiError(0, { error: "NETWORK", message: "Cannot reach the server. Check your connection and try again." });
  }
  if (response.status === 204) {
    return undefined;
  }
  const answer = (await response.json().catch(() => undefined)) as unknown;
  if (!response.ok) {
    const error = answer as Partial<ErrorAnswer> | undefined;
    throw new ApiError(response.status, {
      error: error?.error ?? "HTTP_" + response.status,
      message: error?.message ?? "Something went wrong. Try again.",
      ...(error?.retryAfterSeconds !== undefined && { retryAfterSeconds: error.retryAfterSeconds }),
    });
  }
  return answer;
}
