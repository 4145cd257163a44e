// The browser's half of a passkey ceremony: the options authsvc made (through the BFF) go to
// navigator.credentials as they came, and the credential goes back as its toJSON(). The
// page never looks inside either; authsvc checks them.

import type { PasskeyCeremony } from "../shared/api.js";
import { ApiError, call } from "./api.js";

/** Whether this browser can do a passkey ceremony from JSON options. */
export function passkeysSupported(): boolean {
  return (
    typeof PublicKeyCredential !== "undefined" &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function"
  );
}

/** The person dismissed the browser's prompt, or no passkey of this site was there. */
const CANCELLED = new ApiError(0, { error: "PASSKEY_CANCELLED", message: "No passkey was used." });

async function credentialJson(
  promise: Promise<Credential | null>,
): Promise<PublicKeyCredentialJSON> {
  let credential: Credential | null;
  try {
    credential = await promise;
  } catch {
    throw CANCELLED;
  }
  if (!(credential instanceof PublicKeyCredential)) {
    throw CANCELLED;
  }
  return credential.toJSON();
}

/** Create a passkey for the signed-in person and have the BFF add it; its name. */
export async function addPasskey(): Promise<string> {
  const ceremony = (await call("POST", "/api/passkeys/options")) as PasskeyCeremony;
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(
    ceremony.options as PublicKeyCredentialCreationOptionsJSON,
  );
  const credential = await credentialJson(navigator.credentials.create({ publicKey }));
  const added = (await call("POST", "/api/passkeys", { challengeId: ceremony.challengeId, credential })) as {
    name: string;
  };
  return added.name;
}

/** Sign in with one of this site's passkeys (the browser offers them; none is named). */
export async function signInWithPasskey(): Promise<void> {
  const ceremony = (await call("POST", "/api/passkey-login/options")) as PasskeyCeremony;
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(
    ceremony.options as PublicKeyCredentialRequestOptionsJSON,
  );
  const credential = await credentialJson(navigator.credentials.get({ publicKey }));
  await call("POST", "/api/passkey-login", { challengeId: ceremony.challengeId, credential });
}
