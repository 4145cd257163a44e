// Second factors against a live server: the two-step login, StepUp after STEP_UP_REQUIRED,
// the factor RPCs' wrappers and the assurance level a verified token carries.
//
// TOTP codes are computed here with node:crypto (RFC 6238: HMAC-SHA-1, 30 s steps, 6 digits),
// no TOTP library. A code is good once (the server refuses a replayed time step), so each
// account remembers the last step it used and the next code is for a later step, which the
// server accepts within its skew window of one step.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { AuthClient, type AuthClientOptions } from "../src/client.js";
import { PendingLoginInvalid, SecondFactorInvalid, StepUpRequired } from "../src/errors.js";
import {
  AssuranceLevel,
  FactorType,
  SecondFactorRequired,
  type PendingLogin,
} from "../src/second_factors.js";
import { TokenManager, type Tokens } from "../src/token_manager.js";
import { TokenVerifier } from "../src/verifier.js";
import {
  AuthsvcServer,
  closedAfterSuite,
  newAccount,
  rejection,
  TaggedClient,
  waitUntilPast,
  type Servers,
} from "./harness.js";

const STEP_SECONDS = 30;
const CHANGE_PASSWORD_RPC = "/authsvc.v1.AuthService/ChangePassword";
const REFRESH_RPC = "/authsvc.v1.AuthService/Refresh";
/** The step-up window of the replica the step-up tests use: short, so a test can outwait it. */
const STEP_UP_WINDOW_MS = 2_000;
const NEW_PASSWORD = "a brand new passphrase";

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

function base32Decode(text: string): Buffer {
  let bits = 0;
  let value = 0;
  const bytes: number[] = [];
  for (const char of text.replace(/=+$/, "").toUpperCase()) {
    const index = BASE32.indexOf(char);
    assert.ok(index >= 0, `not base32: ${char}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((value >>> bits) & 0xff);
    }
  }
  return Buffer.from(bytes);
}

/** RFC 6238 TOTP (RFC 4226 HOTP over the time step): SHA-1, 6 digits. */
function totp(secret: string, step: number): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = (mac[mac.length - 1] ?? 0) & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, "0");
}

function currentStep(): number {
  return Math.floor(Date.now() / 1000 / STEP_SECONDS);
}

/** An account with a confirmed TOTP, and the codes it has not used yet. */
class TotpAccount {
  readonly email: string;
  readonly password: string;
  readonly secret: string;
  readonly factorId: string;
  readonly recoveryCodes: string[];
  #lastStep: number;

  constructor(init: { email: string; password: string; secret: string; factorId: string; recoveryCodes: string[]; step: number }) {
    this.email = init.email;
    this.password = init.password;
    this.secret = init.secret;
    this.factorId = init.factorId;
    this.recoveryCodes = [...init.recoveryCodes];
    this.#lastStep = init.step;
  }

  /** A code of a step this account has not used: now's, or the next one if now's is spent. */
  nextCode(): { totpCode: string } {
    const step = Math.max(currentStep(), this.#lastStep + 1);
    this.#lastStep = step;
    return { totpCode: totp(this.secret, step) };
  }

  /** An unused recovery code. */
  recoveryCode(): { recoveryCode: string } {
    const code = this.recoveryCodes.shift();
    assert.ok(code !== undefined, "out of recovery codes");
    return { recoveryCode: code };
  }
}

/** Register a new account with `client` and enrol a TOTP in that fresh session. */
async function enrolledAccount(client: AuthClient): Promise<TotpAccount> {
  const account = newAccount();
  await client.register(account);
  const enrolment = await client.enrolTotp({ name: "Phone" });
  const step = currentStep();
  const confirmed = await client.confirmTotp({ factorId: enrolment.factorId, code: totp(enrolment.secret, step) });
  return new TotpAccount({
    ...account,
    secret: enrolment.secret,
    factorId: confirmed.factor.factorId,
    recoveryCodes: confirmed.recoveryCodes,
    step,
  });
}

async function pendingLogin(client: AuthClient, account: TotpAccount): Promise<PendingLogin> {
  const error = await rejection(client.login({ email: account.email, password: account.password }));
  assert.ok(error instanceof SecondFactorRequired, String(error));
  return error.pending;
}

export function secondFactorTests(servers: () => Servers): void {
  describe("second factors", () => {
    const closing = closedAfterSuite((client: AuthClient) => client);
    const newClient = () => closing(new AuthClient({ baseUrl: servers().main.baseUrl }));
    const newAccountWithTotp = async () => enrolledAccount(newClient());

    test("a TOTP user's login throws SecondFactorRequired with the pending login and no tokens", async () => {
      const account = await newAccountWithTotp();
      const client = newClient();

      const error = await rejection(client.login({ email: account.email, password: account.password }));

      assert.ok(error instanceof SecondFactorRequired, String(error));
      assert.ok(error.pending.factorTypes.includes(FactorType.TOTP));
      assert.equal(error.pending.enrolmentRequired, false);
      assert.ok(error.pending.expiresAt.getTime() > Date.now());
      assert.ok(!error.message.includes(error.pending.pendingLoginToken));
      assert.equal(client.tokens.tokens, undefined);
    });

    test("completeLogin with a TOTP code computed with node:crypto signs the client in at AAL2", async () => {
      const account = await newAccountWithTotp();
      const client = newClient();
      const pending = await pendingLogin(client, account);

      const tokens = await client.completeLogin(pending, account.nextCode());

      assert.deepEqual(client.tokens.tokens, tokens);
      const current = (await client.listSessions()).sessions.find((session) => session.current);
      assert.equal(current?.sessionId, tokens.sessionId);
      assert.equal(current?.assuranceLevel, AssuranceLevel.AAL2);
    });

    test("completeLogin with a recovery code signs in; a wrong TOTP code throws SecondFactorInvalid", async () => {
      const account = await newAccountWithTotp();
      const client = newClient();
      const pending = await pendingLogin(client, account);
      const right = account.nextCode().totpCode;

      const wrong = await rejection(
        client.completeLogin(pending, { totpCode: String((Number(right) + 1) % 1_000_000).padStart(6, "0") }),
      );
      const tokens = await client.completeLogin(pending, account.recoveryCode());

      assert.ok(wrong instanceof SecondFactorInvalid, String(wrong));
      assert.deepEqual(client.tokens.tokens, tokens);
    });

    test("completeLogin with an unknown pending token throws PendingLoginInvalid", async () => {
      const client = newClient();

      const error = await rejection(client.completeLogin("not-a-pending-login", { totpCode: "123456" }));

      assert.ok(error instanceof PendingLoginInvalid, String(error));
      assert.equal(client.tokens.tokens, undefined);
    });

    describe("on a replica where every account must have a second factor", () => {
      let replica: AuthsvcServer;

      before(async () => {
        replica = await AuthsvcServer.start(servers().main.dataDir, { AUTHSVC_SECOND_FACTOR_POLICY: "all" });
      });
      after(async () => {
        await replica.stop();
      });

      test("register throws SecondFactorRequired with enrolmentRequired; enrolling with the pending login signs in", async () => {
        const client = closing(new AuthClient({ baseUrl: replica.baseUrl }));

        const error = await rejection(client.register(newAccount()));

        assert.ok(error instanceof SecondFactorRequired, String(error));
        assert.deepEqual([error.pending.enrolmentRequired, error.pending.factorTypes], [true, []]);
        assert.equal(client.tokens.tokens, undefined);
        const enrolment = await client.enrolTotp({ name: "Phone", pending: error.pending });
        const confirmed = await client.confirmTotp({
          factorId: enrolment.factorId,
          code: totp(enrolment.secret, currentStep()),
          pending: error.pending,
        });
        assert.ok(confirmed.tokens !== undefined);
        assert.deepEqual(client.tokens.tokens, confirmed.tokens);
        assert.ok(confirmed.recoveryCodes.length > 0);
      });
    });

    test("the verifier exposes acr as the assurance level, and amr", async () => {
      const account = await newAccountWithTotp();
      const client = newClient();
      const twoFactor = await client.completeLogin(await pendingLogin(client, account), account.nextCode());
      const passwordOnly = await newClient().register(newAccount());
      const verifier = new TokenVerifier(client);

      const strong = await verifier.verify(twoFactor.accessToken);
      const weak = await verifier.verify(passwordOnly.accessToken);

      const validation = await client.validateToken(twoFactor.accessToken);

      assert.equal(strong.assuranceLevel, AssuranceLevel.AAL2);
      assert.ok(strong.amr.includes("pwd") && strong.amr.includes("otp"), strong.amr.join(","));
      assert.deepEqual([validation.assuranceLevel, validation.amr], [AssuranceLevel.AAL2, strong.amr]);
      assert.deepEqual([weak.assuranceLevel, weak.amr], [AssuranceLevel.AAL1, ["pwd"]]);
    });

    test("a verifier requiring AAL2 refuses a password-only token with StepUpRequired", async () => {
      const client = newClient();
      const tokens = await client.register(newAccount());
      const verifier = new TokenVerifier(client, { minAssurance: AssuranceLevel.AAL2 });

      const error = await rejection(verifier.verify(tokens.accessToken));

      assert.ok(error instanceof StepUpRequired, String(error));
      assert.equal(error.reason, "STEP_UP_REQUIRED");
    });

    test("listFactors shows the TOTP; removeFactor after stepUp lets the password alone sign in", async () => {
      const account = await newAccountWithTotp();
      const client = newClient();
      await client.completeLogin(await pendingLogin(client, account), account.nextCode());

      const listed = await client.listFactors();
      await client.stepUp(account.recoveryCode());
      await client.removeFactor(account.factorId);
      const tokens = await client.login({ email: account.email, password: account.password });

      assert.deepEqual(
        listed.factors.map((factor) => [factor.factorId, factor.type, factor.name]),
        [[account.factorId, FactorType.TOTP, "Phone"]],
      );
      assert.equal(listed.recoveryCodesRemaining, account.recoveryCodes.length + 1);
      assert.deepEqual(client.tokens.tokens, tokens);
    });

    describe("step-up, on a replica whose step-up window is short", () => {
      let replica: AuthsvcServer;
      const newTagged = closedAfterSuite(
        (options: Partial<AuthClientOptions> = {}) => new TaggedClient(replica, options),
      );

      before(async () => {
        replica = await AuthsvcServer.start(servers().main.dataDir, {
          AUTHSVC_STEP_UP_WINDOW: `${STEP_UP_WINDOW_MS / 1000}s`,
        });
      });
      after(async () => {
        await replica.stop();
      });

      /**
       * A TOTP account signed in with a recovery code on `client`, past the step-up window.
       * (Its app's next code is left for the step-up: the code after that is two steps ahead
       * of the server's time, outside its skew window, until the clock catches up.)
       */
      async function signedInLongAgo(client: AuthClient): Promise<{ account: TotpAccount; tokens: Tokens }> {
        // Enrolled on the main server, whose window is long enough for a new session to add a factor.
        const account = await newAccountWithTotp();
        const tokens = await client.completeLogin(await pendingLogin(client, account), account.recoveryCode());
        await waitUntilPast(new Date(Date.now() + STEP_UP_WINDOW_MS));
        return { account, tokens };
      }

      test("STEP_UP_REQUIRED throws StepUpRequired with the factor types: no refresh, no retry, still signed in", async () => {
        const ended: unknown[] = [];
        const tagged = newTagged({ onSessionExpired: (error) => ended.push(error) });
        const client = tagged.client;
        const { account, tokens } = await signedInLongAgo(client);
        const refreshesBefore = await tagged.serverCount(REFRESH_RPC);

        const error = await rejection(
          client.changePassword({ currentPassword: account.password, newPassword: NEW_PASSWORD }),
        );

        assert.ok(error instanceof StepUpRequired, String(error));
        assert.ok(error.factorTypes.includes(FactorType.TOTP), error.factorTypes.join(","));
        assert.deepEqual(client.tokens.tokens, tokens);
        assert.equal(await tagged.serverCount(CHANGE_PASSWORD_RPC), 1);
        assert.equal(await tagged.serverCount(REFRESH_RPC), refreshesBefore);
        assert.deepEqual(ended, []);
      });

      test("after stepUp the same changePassword succeeds, in the same session with the same refresh token", async () => {
        const client = closing(new AuthClient({ baseUrl: replica.baseUrl }));
        const { account, tokens: before } = await signedInLongAgo(client);
        const change = { currentPassword: account.password, newPassword: NEW_PASSWORD };
        assert.ok((await rejection(client.changePassword(change))) instanceof StepUpRequired);

        const steppedUp = await client.stepUp(account.nextCode());
        await client.changePassword(change);

        const afterStepUp = client.tokens.tokens;
        assert.equal(steppedUp.assuranceLevel, AssuranceLevel.AAL2);
        assert.equal(afterStepUp?.sessionId, before.sessionId);
        assert.equal(afterStepUp?.refreshToken, before.refreshToken);
        assert.notEqual(afterStepUp?.accessToken, before.accessToken);
      });
    });

    test("a step-up token adopted while a refresh is in flight keeps the successor refresh token", async () => {
      const account = await newAccountWithTotp();
      const client = newClient();
      const signedIn = await client.completeLogin(await pendingLogin(client, account), account.nextCode());
      let entered!: () => void;
      const enteredRefresh = new Promise<void>((resolve) => (entered = resolve));
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      const manager = new TokenManager({
        refresh: async (refreshToken, idempotencyKey) => {
          entered();
          await released;
          const response = await client.raw.refresh({ refreshToken, idempotencyKey });
          return { ...signedIn, accessToken: response.accessToken, refreshToken: response.refreshToken };
        },
      });
      manager.setTokens(signedIn);
      const refreshing = manager.refresh();
      await enteredRefresh;
      await client.stepUp(account.recoveryCode());
      const steppedUp = client.tokens.tokens;
      assert.ok(steppedUp !== undefined);
      const adopting = manager.adoptAccessToken(signedIn.sessionId, steppedUp.accessToken, steppedUp.accessTokenExpiresAt);

      release();
      const rotated = await refreshing;

      assert.equal(await adopting, true);
      assert.equal(manager.tokens?.refreshToken, rotated.refreshToken);
      assert.equal(manager.tokens?.accessToken, steppedUp.accessToken);
    });
  });
}
