// The one table from typed errors (the client's, and the session store's) to HTTP answers.
// The answer's `error` is the authsvc ErrorInfo reason, or the BFF's own (SERVER_BUSY), so
// the page branches on it as the client does; `message` is written for a person and never
// repeats a credential.

import {
  AuthsvcError,
  InvalidArgument,
  InvalidCredentials,
  NotFound,
  PermissionDenied,
  RateLimited,
  SecondFactorRequired,
  SessionExpired,
  SessionLimitReached,
  Unauthenticated,
  Unavailable,
  UserDisabled,
} from "@authsvc/client";
import { HttpError } from "./http.js";
import { SessionStoreFull } from "./sessions.js";

/** The HTTP answer for what a client call threw; an HttpError passes through. */
export function httpErrorOf(error: unknown): HttpError {
  if (error instanceof HttpError) {
    return error;
  }
  if (error instanceof SessionStoreFull) {
    const retryAfterSeconds = Math.max(1, Math.ceil(error.retryAfterMs / 1000));
    return new HttpError(
      503,
      {
        error: "SERVER_BUSY",
        message: `Too many people are signed in right now. Try again in ${describeWait(retryAfterSeconds)}.`,
        retryAfterSeconds,
      },
      { "Retry-After": String(retryAfterSeconds) },
    );
  }
  if (error instanceof SecondFactorRequired) {
    // The password was right; this page has no second step to offer but the passkey sign-in.
    return new HttpError(401, {
      error: "SECOND_FACTOR_REQUIRED",
      message: "This account has a second factor, which this page cannot ask for. Sign in with a passkey instead.",
    });
  }
  if (!(error instanceof AuthsvcError)) {
    return new HttpError(500, { error: "INTERNAL", message: "Something went wrong on our side. Try again." });
  }
  const reason = error.reason || "UPSTREAM_ERROR";
  if (error instanceof RateLimited) {
    const retryAfterSeconds = Math.max(1, Math.ceil((error.retryDelayMs ?? 60_000) / 1000));
    return new HttpError(
      429,
      { error: reason, message: `Too many attempts. Try again in ${describeWait(retryAfterSeconds)}.`, retryAfterSeconds },
      { "Retry-After": String(retryAfterSeconds) },
    );
  }
  if (error instanceof InvalidCredentials) {
    return new HttpError(401, { error: reason, message: "The email or password is incorrect." });
  }
  // Passkeys: by reason, so these read the same whichever client version names them.
  if (reason === "SECOND_FACTOR_INVALID" || reason === "PASSKEY_CHALLENGE_INVALID") {
    return new HttpError(401, { error: reason, message: "The passkey was not accepted. Try again." });
  }
  if (reason === "STEP_UP_REQUIRED") {
    return new HttpError(403, { error: reason, message: "For your security, sign in again first, then add the passkey." });
  }
  if (reason === "PASSKEYS_DISABLED") {
    return new HttpError(404, { error: reason, message: "Passkeys are not available here." });
  }
  if (error instanceof SessionExpired) {
    return new HttpError(401, { error: reason, message: "Your session has ended. Sign in again." });
  }
  if (error instanceof Unauthenticated) {
    return new HttpError(401, { error: reason, message: "You are not signed in." });
  }
  if (error instanceof UserDisabled) {
    return new HttpError(403, { error: reason, message: "This account is disabled." });
  }
  if (error instanceof PermissionDenied) {
    return new HttpError(403, { error: reason, message: "That is not allowed." });
  }
  if (error instanceof SessionLimitReached) {
    return new HttpError(409, { error: reason, message: "You are signed in on too many devices. Sign one out first." });
  }
  if (error instanceof InvalidArgument) {
    return new HttpError(400, { error: reason, message: "Check what you entered and try again." });
  }
  if (error instanceof NotFound) {
    return new HttpError(404, { error: reason, message: "That session no longer exists." });
  }
  if (error instanceof Unavailable) {
    return new HttpError(503, { error: reason || "UNAVAILABLE", message: "The sign-in service is unavailable. Try again shortly." });
  }
  return new HttpError(502, { error: reason, message: "The sign-in service failed. Try again." });
}

function describeWait(seconds: number): string {
  if (seconds < 90) {
    return `${seconds} second${seconds === 1 ? "" : "s"}`;
  }
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minutes`;
}
