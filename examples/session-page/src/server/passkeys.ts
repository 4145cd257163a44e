// Thin wrappers over authsvc's passkey RPCs (the client's generated stubs, on its transport
// and token interceptor): the WebAuthn options go to the browser as they came, the browser's
// credential JSON back to authsvc as it came. The BFF never parses or checks either: authsvc
// verifies the ceremony (challenge, origin, relying party, signature).

import { type AuthClient, toAuthsvcError, type Tokens } from "@authsvc/client";
import type { PasskeyCeremony } from "../shared/api.js";

export type { PasskeyCeremony };

interface Timestamp {
  seconds: bigint;
  nanos: number;
}

function dateOf(timestamp: Timestamp | undefined): Date {
  if (timestamp === undefined) {
    throw new Error("authsvc answered without a timestamp");
  }
  return new Date(Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1_000_000));
}

/** The client's typed error for what a raw call threw, as the client's own methods throw. */
async function typed<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toAuthsvcError(error);
  }
}

/**
 * The signed-in client's access token as a header, sent explicitly: the passkey RPCs take
 * either a token or none (a pending login, PasskeyLogin), so the client's interceptor need
 * not know them as authenticated methods.
 */
async function bearer(client: AuthClient): Promise<Record<string, string>> {
  const token = await typed(() => client.tokens.accessToken());
  return token === undefined ? {} : { authorization: `Bearer ${token}` };
}

function ceremony(response: { challengeId: string; optionsJson: string }): PasskeyCeremony {
  return { challengeId: response.challengeId, options: JSON.parse(response.optionsJson) as unknown };
}

/** Creation options for a passkey of the signed-in `client`'s user. */
export async function beginRegistration(client: AuthClient, name: string): Promise<PasskeyCeremony> {
  const headers = await bearer(client);
  return ceremony(await typed(() => client.raw.beginPasskeyRegistration({ name }, { headers })));
}

/**
 * Add the passkey the browser created. The session is at AAL2 afterwards, with a new access
 * token that says so: the client's token pair takes it (its refresh token is unchanged).
 */
export async function finishRegistration(client: AuthClient, challengeId: string, credentialJson: string): Promise<string> {
  const headers = await bearer(client);
  const response = await typed(() =>
    client.raw.finishPasskeyRegistration({ challengeId, credentialJson }, { headers }),
  );
  const current = client.tokens.tokens;
  const signedIn = response.signedIn;
  if (current !== undefined && signedIn !== undefined && signedIn.accessToken !== "") {
    client.tokens.setTokens({
      ...current,
      accessToken: signedIn.accessToken,
      accessTokenExpiresAt: dateOf(signedIn.accessTokenExpiresAt),
    });
  }
  return response.factor?.name ?? "";
}

/** Request options for a sign-in by passkey alone: no user yet, any discoverable passkey. */
export async function beginPasskeyLogin(client: AuthClient): Promise<PasskeyCeremony> {
  return ceremony(await typed(() => client.raw.beginPasskeyAssertion({})));
}

/** Sign `client` in with the browser's assertion, as the browser (its headers). */
export async function passkeyLogin(
  client: AuthClient,
  challengeId: string,
  credentialJson: string,
  headers: Record<string, string>,
): Promise<Tokens> {
  const response = await typed(() =>
    client.raw.passkeyLogin({ assertion: { challengeId, credentialJson } }, { headers }),
  );
  const tokens: Tokens = {
    accessToken: response.accessToken,
    accessTokenExpiresAt: dateOf(response.accessTokenExpiresAt),
    refreshToken: response.refreshToken,
    refreshTokenExpiresAt: dateOf(response.refreshTokenExpiresAt),
    sessionId: response.sessionId,
    userId: response.userId,
  };
  client.tokens.setTokens(tokens);
  return tokens;
}
