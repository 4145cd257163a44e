// A test process that dies: starts a server on a fresh data dir through the harness, prints
// {"server", "postmaster", "dataDir"} as one line, then waits to be killed or, given
// "uncaught", throws when told on stdin. Run by crash.ts, never by the suite itself.

import { readFileSync } from "node:fs";
import path from "node:path";
import { AuthsvcServer, newDataDir } from "./harness.js";

const dataDir = await newDataDir();
const server = await AuthsvcServer.start(dataDir);
const postmaster = Number(readFileSync(path.join(dataDir, "postgres", "postmaster.pid"), "utf8").split("\n", 1)[0]);
process.stdout.write(`${JSON.stringify({ server: server.pid, postmaster, dataDir })}\n`);
if (process.argv[2] === "uncaught") {
  // Once crash.ts has seen the processes run (a line on stdin): thrown any sooner, the
  // reaper could end them before it looks.
  process.stdin.once("data", () => {
    throw new Error("crash_fixture: an uncaught exception, as a test bug would throw");
  });
} else {
  setInterval(() => undefined, 60_000); // until a signal ends it
}
