// The stack's reaper: a detached process that outlives the process that started the stack
// and, when that one ends without stopping it (a crash, a signal, SIGKILL of a test run),
// stops what it started. The kernel closes the reaper's stdin, a pipe only the starting
// process holds, when that process ends however it ends: EOF is the one signal needed.
//
// Input, one JSON object a line: {"group": pid} for each child started as the leader of its
// own process group, {"exited": pid} once it is gone, {"dataDir": dir} for a temporary data
// dir and {"removed": dir} once it is deleted. At EOF the groups get SIGTERM in reverse order
// (the BFF first, authsvc last, which stops its PostgreSQL), then SIGKILL if they hang, and
// the dirs are deleted.

import { readFileSync, rmSync } from "node:fs";
import { createInterface } from "node:readline";

const STOP_TIMEOUT_MS = 30_000;
const POLL_MS = 50;

const groups: number[] = [];
const dataDirs: string[] = [];

function isAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

async function stopGroup(pid: number): Promise<void> {
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(-pid, name);
    } catch {
      // Already gone.
    }
  };
  signal("SIGTERM");
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  while (isAlive(pid) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  if (isAlive(pid)) {
    signal("SIGKILL");
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
    const message = JSON.parse(line) as { group?: number; exited?: number; dataDir?: string; removed?: string };
    if (message.group !== undefined) groups.push(message.group);
    if (message.exited !== undefined) remove(groups, message.exited);
    if (message.dataDir !== undefined) dataDirs.push(message.dataDir);
    if (message.removed !== undefined) remove(dataDirs, message.removed);
  })
  .on("close", () => {
    void (async () => {
      for (const pid of groups.reverse()) {
        await stopGroup(pid);
      }
      for (const dir of dataDirs) {
        rmSync(dir, { recursive: true, force: true });
      }
    })();
  });
