// The harness's reaper: a detached process that outlives the test process and, when the
// test process ends without having cleaned up (a crash, a signal, SIGKILL), stops what it
// started. The kernel closes the reaper's stdin, a pipe only the test process holds, when
// that process ends however it ends, so EOF is the one signal needed.
//
// The test process writes one JSON object a line: {"server": pid} for each `authsvc serve`
// (the leader of its own process group), {"exited": pid} once it is gone, {"dataDir": dir}
// for each embedded PostgreSQL's data dir and {"removed": dir} once it is deleted. At EOF
// what is left is stopped as harness.ts stops it: servers in reverse order with SIGTERM
// (each stops the shared PostgreSQL when it is the last one out), then any postmaster still
// running in a data dir (fast shutdown), then the dir is deleted.

import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";

/** Bounds each wait for a process to end, before it is killed; only a hang reaches it. */
const STOP_TIMEOUT_MS = 30_000;
const POLL_MS = 50;

const servers: number[] = [];
const dataDirs: string[] = [];

function isAlive(pid: number): boolean {
  try {
    // A zombie (ended, not yet reaped by its new parent) counts as gone.
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}

async function gone(pid: number): Promise<boolean> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (isAlive(pid)) {
    if (Date.now() > deadline) {
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  return true;
}

function postmaster(dataDir: string): number | undefined {
  const pidFile = path.join(dataDir, "postgres", "postmaster.pid");
  if (!existsSync(pidFile)) {
    return undefined;
  }
  const pid = Number(readFileSync(pidFile, "utf8").split("\n", 1)[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

async function reap(): Promise<void> {
  for (const pid of servers.reverse()) {
    signal(-pid, "SIGTERM");
    if (!(await gone(pid))) {
      signal(-pid, "SIGKILL");
    }
  }
  for (const dataDir of dataDirs) {
    const pid = postmaster(dataDir);
    if (pid !== undefined) {
      signal(pid, "SIGINT"); // PostgreSQL's fast shutdown
      if (!(await gone(pid))) {
        signal(pid, "SIGKILL");
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

function remove<T>(list: T[], item: T): void {
  const index = list.indexOf(item);
  if (index >= 0) {
    list.splice(index, 1);
  }
}

createInterface({ input: process.stdin })
  .on("line", (line) => {
    const message = JSON.parse(line) as { server?: number; exited?: number; dataDir?: string; removed?: string };
    if (message.server !== undefined) {
      servers.push(message.server);
    }
    if (message.exited !== undefined) {
      remove(servers, message.exited);
    }
    if (message.dataDir !== undefined) {
      dataDirs.push(message.dataDir);
    }
    if (message.removed !== undefined) {
      remove(dataDirs, message.removed);
    }
  })
  .on("close", () => {
    void reap();
  });
