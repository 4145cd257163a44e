// However the test process ends, no server or PostgreSQL it started is left running and its
// data dir is gone: crash_fixture.ts starts one through the harness and is then killed.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";

/** Bounds the fixture's start and the cleanup after its death; only a hang reaches them. */
const START_TIMEOUT_MS = 120_000;
const CLEANUP_TIMEOUT_MS = 60_000;

interface Started {
  server: number;
  postmaster: number;
  dataDir: string;
}

function isAlive(pid: number): boolean {
  try {
    // A zombie (ended, not yet reaped by its new parent) counts as gone.
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function leftOver(started: Started): string[] {
  return [
    ...(isAlive(started.server) ? [`server ${started.server}`] : []),
    ...(isAlive(started.postmaster) ? [`postmaster ${started.postmaster}`] : []),
    ...(existsSync(started.dataDir) ? [`data dir ${started.dataDir}`] : []),
  ];
}

/** Start the fixture, end it with `end` (a signal, or "uncaught" for it to throw), and
 * return what it had started once it has exited. */
async function crash(end: NodeJS.Signals | "uncaught"): Promise<Started> {
  const fixture = spawn(
    process.execPath,
    [path.join(path.dirname(fileURLToPath(import.meta.url)), "crash_fixture.js"), end],
    { stdio: ["pipe", "pipe", "pipe"] },
  );
  const exited = new Promise((resolve) => fixture.once("exit", resolve));
  let stderr = "";
  fixture.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the fixture did not start\n${stderr}`)), START_TIMEOUT_MS);
    createInterface({ input: fixture.stdout }).once("line", (first) => {
      clearTimeout(timer);
      resolve(first);
    });
    void exited.then(() => reject(new Error(`the fixture exited before starting\n${stderr}`)));
  });
  const started = JSON.parse(line) as Started;
  assert.ok(isAlive(started.server) && isAlive(started.postmaster), "the fixture's processes run");
  if (end === "uncaught") {
    fixture.stdin.write("throw now\n");
  } else {
    fixture.kill(end);
  }
  await exited;
  return started;
}

async function cleanedUp(started: Started): Promise<string[]> {
  const deadline = Date.now() + CLEANUP_TIMEOUT_MS;
  while (leftOver(started).length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return leftOver(started);
}

export function crashTests(): void {
  describe("a crashed test process leaves nothing running", () => {
    for (const end of ["SIGKILL", "SIGTERM", "SIGINT", "uncaught"] as const) {
      test(`ended by ${end === "uncaught" ? "an uncaught exception" : end}`, async () => {
        const started = await crash(end);

        assert.deepEqual(await cleanedUp(started), []);
      });
    }
  });
}
