// resetPassword against a live server: an operator's reset token (AdminService, called here
// with the generated client and an operator's service key) sets the password once and ends
// every session of the account.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { AuthClient } from "../src/client.js";
import { InvalidCredentials, PasswordResetTokenInvalid, WeakPassword } from "../src/errors.js";
import { AdminService } from "../src/gen/authsvc/v1/admin_service_pb.js";
import {
  AuthsvcServer,
  closedAfterSuite,
  mintServiceKey,
  newAccount,
  rejection,
  type Servers,
  type ServiceKey,
} from "./harness.js";

const NEW_PASSWORD = "a brand new passphrase";

export function passwordResetTests(servers: () => Servers): void {
  describe("resetPassword with an operator's reset token", () => {
    let operator: ServiceKey;
    /** A replica on the shared database on which `operator` may call AdminService. */
    let replica: AuthsvcServer;
    let admin: ReturnType<typeof createClient<typeof AdminService>>;
    const connection: { manager?: Http2SessionManager } = {};
    const newClient = closedAfterSuite(() => new AuthClient({ baseUrl: replica.baseUrl }));

    before(async () => {
      operator = await mintServiceKey("node-operator");
      replica = await AuthsvcServer.start(servers().main.dataDir, {
        AUTHSVC_SERVICE_KEYS: operator.entry,
        AUTHSVC_OPERATORS: "node-operator",
      });
      connection.manager = new Http2SessionManager(replica.baseUrl);
      admin = createClient(
        AdminService,
        createGrpcTransport({
          baseUrl: replica.baseUrl,
          sessionManager: connection.manager,
          interceptors: [
            (next) => async (req) => {
              req.header.set("authorization", `Bearer ${operator.key}`);
              return next(req);
            },
          ],
        }),
      );
    });
    after(async () => {
      connection.manager?.abort();
      await replica.stop();
    });

    const tokenFor = async (email: string): Promise<string> =>
      (await admin.createPasswordResetToken({ user: { case: "email", value: email } })).resetToken;

    test("resetPassword sets the new password and ends every session of the account", async () => {
      const account = newAccount();
      const first = newClient();
      const signedIn = await first.register(account);
      await newClient().login(account);

      const revoked = await newClient().resetPassword({
        resetToken: await tokenFor(account.email),
        newPassword: NEW_PASSWORD,
      });

      assert.equal(revoked, 2);
      const validation = await first.validateToken(signedIn.accessToken);
      assert.equal(validation.inactiveReason, "SESSION_REVOKED");
      assert.ok(await rejection(newClient().login(account)) instanceof InvalidCredentials);
      await newClient().login({ ...account, password: NEW_PASSWORD });
    });

    test("resetPassword with a used token throws PasswordResetTokenInvalid", async () => {
      const account = newAccount();
      await newClient().register(account);
      const resetToken = await tokenFor(account.email);
      await newClient().resetPassword({ resetToken, newPassword: NEW_PASSWORD });

      const error = await rejection(newClient().resetPassword({ resetToken, newPassword: "another passphrase" }));

      assert.ok(error instanceof PasswordResetTokenInvalid);
    });

    test("resetPassword with a weak password throws WeakPassword and the token stays good", async () => {
      const account = newAccount();
      await newClient().register(account);
      const resetToken = await tokenFor(account.email);

      const error = await rejection(newClient().resetPassword({ resetToken, newPassword: "short" }));

      assert.ok(error instanceof WeakPassword);
      assert.equal(await newClient().resetPassword({ resetToken, newPassword: NEW_PASSWORD }), 1);
    });
  });
}
