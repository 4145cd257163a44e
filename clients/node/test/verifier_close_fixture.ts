// A service process that follows the revocation feed until it is current, then closes its
// verifier and its client, and should then exit by itself: nothing the verifier started
// (stream, stale timer, reconnect timer) may keep it alive. Run by revocations.ts.

import { AuthClient } from "../src/client.js";
import { TokenVerifier } from "../src/verifier.js";

const [baseUrl] = process.argv.slice(2);
const serviceKey = process.env["AUTHSVC_TEST_SERVICE_KEY"];
if (baseUrl === undefined || serviceKey === undefined) {
  throw new Error("usage: verifier_close_fixture.js BASE_URL (AUTHSVC_TEST_SERVICE_KEY set)");
}
const client = new AuthClient({ baseUrl, serviceKey });
let verifier: TokenVerifier | undefined;
await new Promise<void>((resolve) => {
  verifier = new TokenVerifier(client, {
    // An hour: a stale timer left running would hold the process that long.
    revocations: { staleAfterMs: 3_600_000, onEvent: (status) => status.type === "current" && resolve() },
  });
});
await verifier?.close();
client.close();
process.stdout.write("current, then closed\n");
