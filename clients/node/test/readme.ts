// The README examples in JavaScript run as written, as their own `node` processes, against the
// live server: only the server address is changed. They import "@authsvc/client", which
// resolves to this package's build through its own "exports" (a package may import itself
// by name), exactly as in a project that installed it.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, test } from "node:test";
import type { Servers } from "./harness.js";

const run = promisify(execFile);

// build/test/readme.js -> clients/node.
const PACKAGE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const DEFAULT_URL = "http://127.0.0.1:50051";
// A bound on one example's run, not a timing assertion.
const EXAMPLE_TIMEOUT_MS = 30_000;
const SESSION_ID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/** The bodies of the README's ```js blocks (indented ones too, as in a list item). */
async function jsExamples(readme: string): Promise<string[]> {
  const text = await readFile(readme, "utf8");
  const blocks = text.matchAll(/^( *)```js\n([\s\S]*?)^\1```/gm);
  return [...blocks].map(([, indent = "", body = ""]) =>
    body
      .split("\n")
      .map((line) => line.slice(indent.length))
      .join("\n"),
  );
}

/** Writes `source` into this package (so "@authsvc/client" resolves) and runs it with node. */
async function runExample(name: string, source: string, baseUrl: string): Promise<string> {
  const dir = path.join(PACKAGE_DIR, "build", "readme-examples");
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name}.mjs`);
  await writeFile(file, source.replaceAll(DEFAULT_URL, baseUrl));
  const { stdout } = await run(process.execPath, [file], {
    cwd: dir,
    env: { ...process.env, AUTHSVC_URL: baseUrl },
    timeout: EXAMPLE_TIMEOUT_MS,
  });
  return stdout;
}

export function readmeTests(servers: () => Servers): void {
  describe("README examples", () => {
    test("the client README's quick start works on a first and on a later run", async () => {
      const examples = await jsExamples(path.join(PACKAGE_DIR, "README.md"));
      assert.equal(examples.length, 1);
      const source = examples[0] ?? "";
      const baseUrl = servers().main.baseUrl;

      // First run registers the account; the second finds it taken and logs in instead.
      for (const attempt of ["first", "later"]) {
        const output = await runExample(`client-readme-${attempt}`, source, baseUrl);
        assert.match(output, /^login refused: INVALID_CREDENTIALS$/m, output);
        assert.match(output, new RegExp(`^${SESSION_ID.source} quickstart/1\\.0 \\(this one\\)$`, "m"), output);
        assert.match(output, /^access token active: true$/m, output);
        // Logout(ALL_SESSIONS) ends every session of the account: one after the first run
        // (the registration's), and on the later run that one was already revoked.
        assert.match(output, /^revoked: 1$/m, output);
      }
    });
  });
}
