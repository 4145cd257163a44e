// A gateway's JWT check as jose does it: one remote JWKS, kept for the life of the process.
// Run by tests/integration/test_http_port.py with `node --input-type=module` in clients/node
// (where jose is installed). Arguments: the JWKS URL, the issuer, the audience, and
// createRemoteJWKSet's options as JSON. Each line read is an access token; each line written
// is {"sub", "kid"} for a token that verifies, or {"error"} (jose's error code) for one that
// does not.
import { createInterface } from "node:readline";
import { createRemoteJWKSet, jwtVerify } from "jose";

const [url, issuer, audience, options] = process.argv.slice(-4);
const jwks = createRemoteJWKSet(new URL(url), JSON.parse(options));

for await (const token of createInterface({ input: process.stdin })) {
  let answer;
  try {
    const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer, audience });
    answer = { sub: payload.sub, kid: protectedHeader.kid };
  } catch (error) {
    answer = { error: error.code ?? String(error) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
