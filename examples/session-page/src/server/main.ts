// The BFF as a process: settings from the environment, one JSON line when it listens,
// a clean stop on SIGTERM or SIGINT.

import path from "node:path";
import { fileURLToPath } from "node:url";
import { Bff } from "./app.js";
import { ConfigError, configFromEnv } from "./config.js";
import { log } from "./log.js";

// build/server/main.js -> the example's root, where static/ and build/public/ are.
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

async function main(): Promise<void> {
  let config;
  try {
    config = configFromEnv();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`session-page: configuration error: ${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const bff = await Bff.start(config, root);
  log("listening", { url: bff.url });
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      return;
    }
    stopping = true;
    log("stopping", { signal });
    void bff.close().then(() => process.exit(0));
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

await main();
