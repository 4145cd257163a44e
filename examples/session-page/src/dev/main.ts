// `make example-session-page`: the stack with a 15-minute idle timeout on fixed ports, a
// demo account, and the URL to open; runs until Ctrl-C. The database is a fresh temporary
// one each time, deleted at the end.

import { startStack } from "./stack.js";

const PAGE_PORT = Number(process.env["SESSION_PAGE_PORT"] ?? "8080");
const AUTHSVC_PORT = Number(process.env["AUTHSVC_PORT"] ?? "50051");
const DEMO = { email: "demo@example.com", password: "correct horse battery staple" };

const verbose = process.argv.includes("--verbose");
const stack = await startStack({
  authsvcEnv: { AUTHSVC_SESSION_IDLE_TIMEOUT: "15m" },
  pagePort: PAGE_PORT,
  authsvcPort: AUTHSVC_PORT,
  onLine: (source, line) => {
    if (verbose || source === "bff") {
      process.stdout.write(`[${source}] ${line}\n`);
    }
  },
});
await stack.createUser(DEMO.email, DEMO.password);

process.stdout.write(
  [
    "",
    `  Session page:  ${stack.pageUrl}`,
    `  Passkeys on:   ${stack.passkeyPageUrl}`,
    `  Demo account:  ${DEMO.email} / ${DEMO.password}`,
    `  authsvc:       ${stack.authsvcUrl}`,
    "",
    "  Sign in from two browsers (or a private window) to see both devices. Ctrl-C stops everything.",
    "",
  ].join("\n"),
);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  process.stdout.write("\nstopping...\n");
  void stack.stop().then(() => process.exit(0));
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
