import { createRequire } from "node:module";

/**
 * The release of authsvc this client belongs to: its package.json version, which a test holds
 * equal to the version the server and the Python client declare (authsvc/VERSION).
 */
// Read through the package's own name, so the path is the same from dist/ and from build/src/.
export const VERSION: string = (
  createRequire(import.meta.url)("@authsvc/client/package.json") as { version: string }
).version;
