// The package's `engines` must promise no Node its locked dependencies refuse: each
// dependency's lowest supported Node is at most ours (package-lock.json records them).

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";

interface LockedPackage {
  engines?: { node?: string };
}

/** The directory of package.json, above this file (src or build). */
function packageDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package-lock.json"))) {
    const parent = path.dirname(dir);
    assert.notEqual(parent, dir, "no package-lock.json above the tests");
    dir = parent;
  }
  return dir;
}

/** [major, minor, patch] of a ">=X[.Y[.Z]]" range; any other form fails, to be looked at. */
function lowestNode(range: string, owner: string): number[] {
  const match = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(range.trim());
  assert.ok(match !== null, `${owner}: engines.node ${JSON.stringify(range)} is not a ">=" range`);
  return [Number(match[1]), Number(match[2] ?? 0), Number(match[3] ?? 0)];
}

function atMost(a: number[], b: number[]): boolean {
  for (const [index, part] of a.entries()) {
    const other = b[index] ?? 0;
    if (part !== other) {
      return part < other;
    }
  }
  return true;
}

export function engineTests(): void {
  describe("package engines", () => {
    test("every locked dependency runs on the lowest Node the package declares", () => {
      const dir = packageDir();
      const ours = (JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8")) as LockedPackage).engines?.node;
      const lock = JSON.parse(readFileSync(path.join(dir, "package-lock.json"), "utf8")) as {
        packages: Record<string, LockedPackage>;
      };
      assert.ok(ours !== undefined, "package.json declares no engines.node");
      const lowest = lowestNode(ours, "package.json");
      const refusing = Object.entries(lock.packages)
        .filter(([name, locked]) => name !== "" && locked.engines?.node !== undefined)
        .filter(([name, locked]) => !atMost(lowestNode(locked.engines?.node ?? "", name), lowest))
        .map(([name, locked]) => `${name} wants node ${locked.engines?.node}`);
      assert.deepEqual(refusing, []);
    });
  });
}
