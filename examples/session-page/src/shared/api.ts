// The JSON the page and the BFF exchange (the HTTP contract in the README): declared once,
// compiled into both.

export interface SessionState {
  signedIn: boolean;
  /** Send back as X-CSRF-Token on every POST and DELETE (the login too). */
  csrfToken: string;
  /** Report activity at most this often (POST /api/activity). */
  activityIntervalMs: number;
  user?: { id: string };
}

export type DeviceKind = "desktop" | "mobile" | "tablet" | "unknown";

export interface DeviceSession {
  id: string;
  current: boolean;
  deviceType: DeviceKind;
  browser: string;
  os: string;
  ipAddress: string;
  /** "Berlin, DE"; "" when the server does not know. */
  location: string;
  lastActiveAt: string;
  createdAt: string;
  /** Signed in with two factors (a passkey, or a password and a second factor): AAL2. */
  twoFactor: boolean;
}

export interface SessionList {
  sessions: DeviceSession[];
}

export interface RevokedCount {
  revoked: number;
}

/** POST /api/passkeys/options and /api/passkey-login/options: a WebAuthn ceremony begun. */
export interface PasskeyCeremony {
  challengeId: string;
  /** For PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON. */
  options: unknown;
}

/** POST /api/passkeys: the passkey added. */
export interface PasskeyAdded {
  name: string;
}

/** Every error answer: `error` is the authsvc ErrorInfo reason, or one of the BFF's own. */
export interface ErrorAnswer {
  error: string;
  message: string;
  retryAfterSeconds?: number;
}

/** The data of an SSE `session-ended` event. */
export interface SessionEnded {
  reason: string;
  message: string;
  endedAt: string;
}

export const SESSION_ENDED_EVENT = "session-ended";
export const CSRF_HEADER = "X-CSRF-Token";
