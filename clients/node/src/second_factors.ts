// Second factors: the values of the two-step login, StepUp and the factor RPCs, and the
// SecondFactorRequired that login() throws instead of returning tokens it does not have.

import { AssuranceLevel, FactorType } from "./gen/authsvc/v1/second_factors_pb.js";
import type { Tokens } from "./token_manager.js";

export { AssuranceLevel, FactorType };

/**
 * A login whose password was right and that needs one more step before it becomes a
 * session. It holds no session tokens.
 */
export interface PendingLogin {
  /**
   * Sensitive: good only for completeLogin() (or, when `enrolmentRequired`, for enrolTotp()
   * and confirmTotp()), until `expiresAt` and for a few wrong codes.
   */
  pendingLoginToken: string;
  /** When the pending login stops being accepted: login() again. */
  expiresAt: Date;
  /** The factors the user can complete the login with. */
  factorTypes: FactorType[];
  /**
   * The account must enrol a second factor first (the server's policy or an operator's
   * mark); finishing the enrolment completes the login.
   */
  enrolmentRequired: boolean;
}

/**
 * Thrown by login() and register() when the password was right and the account needs a
 * second factor (or must enrol one) before it gets a session: finish with
 * `completeLogin(error.pending, proof)`.
 *
 * Thrown, not returned, so that login() keeps resolving to Tokens and code that does not
 * know second factors stops here instead of using a session it does not have. Not an
 * AuthsvcError: the server answered OK, and issued no tokens. Its message never shows the
 * pending token.
 */
export class SecondFactorRequired extends Error {
  readonly pending: PendingLogin;

  constructor(pending: PendingLogin) {
    const kinds = pending.factorTypes.map((kind) => FactorType[kind] ?? String(kind)).join(", ") || "none";
    super(`${pending.enrolmentRequired ? "enrol a second factor" : "second factor required"} (factors: ${kinds})`);
    this.name = new.target.name;
    this.pending = pending;
  }
}

/** A WebAuthn assertion: the browser's PublicKeyCredential as JSON, for a BeginPasskeyAssertion challenge. */
export interface PasskeyAssertion {
  challengeId: string;
  /** Sensitive: the credential from navigator.credentials.get(), as JSON (its toJSON()). */
  credentialJson: string;
}

/**
 * One verification of a second factor, for completeLogin() and stepUp(): the 6 digits of
 * the user's TOTP app, an unused recovery code (used up by the call), or a passkey assertion.
 */
export type FactorProof = { totpCode: string } | { recoveryCode: string } | { passkey: PasskeyAssertion };

/** One of the user's confirmed second factors (never a secret). */
export interface FactorInfo {
  factorId: string;
  type: FactorType;
  /** The label the user gave it, e.g. "Phone". */
  name: string;
  createdAt: Date;
  /** When it last proved a sign-in or a step-up; undefined if never. */
  lastUsedAt: Date | undefined;
}

/** The caller's confirmed factors, oldest first. */
export interface FactorList {
  factors: FactorInfo[];
  /** How many unused recovery codes the user has. */
  recoveryCodesRemaining: number;
  /** The user must have a second factor (the server's policy or an operator's mark). */
  secondFactorRequired: boolean;
}

/** A TOTP enrolment awaiting confirmTotp(): the secret, shown once. */
export interface TotpEnrolment {
  factorId: string;
  /** Sensitive: the base32 secret, for typing into an app. */
  secret: string;
  /** Sensitive: otpauth://totp/..., for a QR code. */
  provisioningUri: string;
  /** Confirm before this instant, or enrol again. */
  expiresAt: Date;
}

/** A confirmed TOTP factor. */
export interface TotpConfirmation {
  factor: FactorInfo;
  /** Sensitive, shown once: new recovery codes when this is the user's first factor; else empty. */
  recoveryCodes: string[];
  /**
   * The new session when the enrolment completed a pending login (now the client's);
   * undefined in a session, whose access token the client has replaced.
   */
  tokens: Tokens | undefined;
}

/** The session after stepUp(); the client has swapped in the new access token. */
export interface SteppedUp {
  assuranceLevel: AssuranceLevel;
  /** Sensitive calls need no other step-up until then. */
  stepUpExpiresAt: Date;
  accessTokenExpiresAt: Date;
}

/** A new set of recovery codes (the old set no longer works). */
export interface RecoveryCodes {
  /** Sensitive, shown once. */
  recoveryCodes: string[];
  /** How many of the user's other sessions the change ended. */
  revokedSessionCount: number;
}

/** The protobuf oneof of a FactorProof. */
export function factorProofInit(
  proof: FactorProof,
):
  | { proof: { case: "totpCode"; value: string } }
  | { proof: { case: "recoveryCode"; value: string } }
  | { proof: { case: "passkey"; value: { challengeId: string; credentialJson: string } } } {
  if ("totpCode" in proof) {
    return { proof: { case: "totpCode", value: proof.totpCode } };
  }
  if ("recoveryCode" in proof) {
    return { proof: { case: "recoveryCode", value: proof.recoveryCode } };
  }
  if ("passkey" in proof) {
    const { challengeId, credentialJson } = proof.passkey;
    return { proof: { case: "passkey", value: { challengeId, credentialJson } } };
  }
  throw new TypeError("a FactorProof has one of totpCode, recoveryCode or passkey");
}

/**
 * The level an access token's `acr` claim names ("aal1", "aal2"), as the server reads it: a
 * token without `acr` was minted before the server kept levels, by a password, so AAL1; a
 * value this client does not know is UNSPECIFIED.
 */
export function assuranceLevelOf(acr: unknown): AssuranceLevel {
  switch (acr) {
    case undefined:
    case null:
    case "aal1":
      return AssuranceLevel.AAL1;
    case "aal2":
      return AssuranceLevel.AAL2;
  }
  return AssuranceLevel.UNSPECIFIED;
}
