// The BFF's settings: the only reader of process.env. Each is validated at start, with the
// variable's name in the error.

import { randomBytes } from "node:crypto";
import { BlockList, isIP } from "node:net";

export interface Config {
  /** authsvc's gRPC address, e.g. http://127.0.0.1:50051 (AUTHSVC_ADDR). */
  authsvcUrl: string;
  /** Sensitive. The BFF's own service key, for the revocation feed only. */
  serviceKey: string;
  host: string;
  port: number;
  /**
   * The origin browsers use, e.g. https://account.example.com. Decides the cookie's name
   * and Secure attribute, and is the only Origin accepted on state-changing requests.
   * Unset: http://<Host header>, for local runs on plain HTTP.
   */
  publicOrigin: string | undefined;
  /** Peers whose X-Forwarded-For is believed (a TLS-terminating proxy in front of the BFF). */
  trustedProxies: BlockList;
  /** Sensitive. Keys the CSRF tokens; a fresh random one per start unless set. */
  csrfSecret: Buffer;
  /** At most this many signed-in browsers at once; a sign-in beyond them is refused (503). */
  maxSessions: number;
  /** At most this many per user; a further sign-in signs out that user's least recently seen. */
  maxSessionsPerUser: number;
}

class ConfigError extends Error {}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name];
  if (value === undefined || value === "") {
    throw new ConfigError(`${name} must be set`);
  }
  return value;
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text === "") {
    return fallback;
  }
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value > 65_535) {
    throw new ConfigError(`${name} must be a port number (0 to 65535)`);
  }
  return value;
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text === "") {
    return fallback;
  }
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) {
    throw new ConfigError(`${name} must be a positive integer`);
  }
  return value;
}

function origin(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const text = env[name];
  if (text === undefined || text === "") {
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${name} must be an origin such as https://account.example.com`);
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.origin !== text.replace(/\/$/, "")) {
    throw new ConfigError(`${name} must be an origin (scheme://host[:port], no path)`);
  }
  return url.origin;
}

/** "10.0.0.0/8,192.0.2.7" into a BlockList (addresses and CIDR ranges, v4 and v6). */
function networks(env: NodeJS.ProcessEnv, name: string): BlockList {
  const list = new BlockList();
  for (const item of (env[name] ?? "").split(/[,\s]+/).filter(Boolean)) {
    const [address = "", prefixText] = item.split("/", 2);
    const family = isIP(address);
    const prefix = prefixText === undefined ? undefined : Number(prefixText);
    if (family === 0 || (prefix !== undefined && (!Number.isInteger(prefix) || prefix < 0))) {
      throw new ConfigError(`${name}: ${item} is not an address or CIDR range`);
    }
    const type = family === 4 ? "ipv4" : "ipv6";
    if (prefix === undefined) {
      list.addAddress(address, type);
    } else {
      list.addSubnet(address, prefix, type);
    }
  }
  return list;
}

function secret(env: NodeJS.ProcessEnv, name: string): Buffer {
  const text = env[name];
  if (text === undefined || text === "") {
    return randomBytes(32);
  }
  const bytes = Buffer.from(text, "base64");
  if (bytes.length < 32) {
    throw new ConfigError(`${name} must be at least 32 bytes, base64-encoded`);
  }
  return bytes;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    authsvcUrl: required(env, "AUTHSVC_ADDR"),
    serviceKey: required(env, "SESSION_PAGE_SERVICE_KEY"),
    host: env["SESSION_PAGE_HOST"] || "127.0.0.1",
    port: port(env, "SESSION_PAGE_PORT", 8080),
    publicOrigin: origin(env, "SESSION_PAGE_PUBLIC_ORIGIN"),
    trustedProxies: networks(env, "SESSION_PAGE_TRUSTED_PROXIES"),
    csrfSecret: secret(env, "SESSION_PAGE_CSRF_SECRET"),
    maxSessions: positiveInt(env, "SESSION_PAGE_MAX_SESSIONS", 10_000),
    maxSessionsPerUser: positiveInt(env, "SESSION_PAGE_MAX_SESSIONS_PER_USER", 10),
  };
}

export { ConfigError };
