// Why a session ended, in words for the person whose session it was: one sentence per
// SessionEndReason (the proto enum's value names without the prefix). The BFF sends the
// sentence in its session-ended event; the login page shows it for `?expired=REASON`.
// Plain data, no Node or DOM: both builds compile this file.

export const END_REASON_SENTENCES = {
  UNSPECIFIED: "The server ended your session.",
  USER_LOGOUT: "You signed out.",
  USER_REVOKED: "You signed this device out from another device.",
  REFRESH_TOKEN_REUSE: "Your session was ended because its credentials were used twice, which looks like theft.",
  ADMIN_REVOKED: "An administrator signed you out.",
  USER_DISABLED: "An administrator disabled your account.",
  PASSWORD_CHANGED: "Your password was changed on another device.",
  PASSWORD_RESET: "Your password was reset.",
  USER_DELETED: "Your account was deleted.",
  IDLE_TIMEOUT: "You were inactive for too long.",
  ABSOLUTE_TIMEOUT: "Your session reached its maximum length.",
  BULK_REVOKED: "An administrator signed out a group of sessions, yours among them.",
  SESSION_LIMIT_EVICTED: "You signed in on too many devices, and this was the least recently used one.",
  SECOND_FACTOR_CHANGED: "A passkey or another second factor of your account was added or removed on another device.",
} as const;

export type EndReasonName = keyof typeof END_REASON_SENTENCES;

/** The known reason `name` names, else UNSPECIFIED (a newer server, or a hand-edited URL). */
export function endReasonName(name: string): EndReasonName {
  return Object.hasOwn(END_REASON_SENTENCES, name) ? (name as EndReasonName) : "UNSPECIFIED";
}

/** The sentence for `name`; UNSPECIFIED's for a reason this page does not know. */
export function endReasonSentence(name: string): string {
  return END_REASON_SENTENCES[endReasonName(name)];
}
