// The published gRPC service config (clients/service_config.json; gen/service_config.ts is
// its copy), applied by the client itself. @connectrpc/connect-node speaks gRPC but reads no
// service config, so this interceptor retries unary calls as the config's retryPolicy says,
// throttled by its retryThrottling, following gRPC's retry design (gRFC A6): a random
// backoff up to initialBackoff, growing by backoffMultiplier to maxBackoff, at most
// maxAttempts attempts, all within the call's one deadline. A lost connection counts as
// UNAVAILABLE, as gRPC counts it.

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { SERVICE_CONFIG_JSON } from "./gen/service_config.js";

/** The parts of a gRPC service config this client applies. */
export interface ServiceConfig {
  methodConfig?: MethodConfig[];
  retryThrottling?: { maxTokens: number; tokenRatio: number };
}

export interface MethodConfig {
  name: { service: string; method?: string }[];
  retryPolicy?: RetryPolicy;
}

export interface RetryPolicy {
  maxAttempts: number;
  /** A protobuf JSON Duration, e.g. "0.2s". */
  initialBackoff: string;
  maxBackoff: string;
  backoffMultiplier: number;
  /** gRPC status code names, e.g. "UNAVAILABLE". */
  retryableStatusCodes: string[];
}

/**
 * The service config this client uses by default: which RPCs are retried on UNAVAILABLE
 * (those safe to repeat: Refresh, because the client sends an idempotency key with it;
 * ValidateToken, GetJwks, ListSessions, GetSession, RevokeSession, Logout), and how.
 */
export const SERVICE_CONFIG: ServiceConfig = JSON.parse(SERVICE_CONFIG_JSON) as ServiceConfig;

// gRPC's status code names; Connect's Code has the same numbers.
const CODES: Readonly<Record<string, Code>> = {
  CANCELLED: Code.Canceled,
  UNKNOWN: Code.Unknown,
  INVALID_ARGUMENT: Code.InvalidArgument,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  PERMISSION_DENIED: Code.PermissionDenied,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  ABORTED: Code.Aborted,
  OUT_OF_RANGE: Code.OutOfRange,
  UNIMPLEMENTED: Code.Unimplemented,
  INTERNAL: Code.Internal,
  UNAVAILABLE: Code.Unavailable,
  DATA_LOSS: Code.DataLoss,
  UNAUTHENTICATED: Code.Unauthenticated,
};

// Node's errors for a connection or stream that went away under a call.
const CONNECTION_LOST: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_STREAM_CANCEL",
]);

function durationMs(value: string): number {
  const match = /^(\d+(?:\.\d+)?)s$/.exec(value);
  if (match?.[1] === undefined) {
    throw new RangeError(`service config: not a duration: ${JSON.stringify(value)}`);
  }
  return Number(match[1]) * 1000;
}

// How connect-node reports an HTTP/2 stream reset (connectErrorFromH2ResetCode).
const STREAM_RESET = /^http\/2 stream closed with error code/;

/** The call's error as gRPC would report it: a lost connection is UNAVAILABLE. */
function asStatus(caught: unknown, signal: AbortSignal): ConnectError {
  const error = ConnectError.from(caught);
  // A stream reset as its connection went away reads CANCEL; only our own abort is a cancel.
  if (error.code === Code.Canceled && !signal.aborted && STREAM_RESET.test(error.rawMessage)) {
    return new ConnectError(`connection lost: ${error.rawMessage}`, Code.Unavailable, error.metadata, undefined, error);
  }
  for (let cause: unknown = error.cause; cause instanceof Error; cause = cause.cause) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_LOST.has(code)) {
      return new ConnectError(`connection lost: ${code}`, Code.Unavailable, error.metadata, undefined, error);
    }
  }
  return error;
}

interface Policy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
  retryable: ReadonlySet<Code>;
}

function policies(config: ServiceConfig): Map<string, Policy> {
  const byName = new Map<string, Policy>();
  for (const method of config.methodConfig ?? []) {
    const retry = method.retryPolicy;
    if (retry === undefined) {
      continue;
    }
    const policy: Policy = {
      // gRPC caps attempts at 5 whatever the config says.
      maxAttempts: Math.min(Math.max(retry.maxAttempts, 1), 5),
      initialBackoffMs: durationMs(retry.initialBackoff),
      maxBackoffMs: durationMs(retry.maxBackoff),
      multiplier: retry.backoffMultiplier,
      retryable: new Set(
        retry.retryableStatusCodes.map((name) => {
          const code = CODES[name];
          if (code === undefined) {
            throw new RangeError(`service config: unknown status code ${JSON.stringify(name)}`);
          }
          return code;
        }),
      ),
    };
    for (const { service, method: name } of method.name) {
      byName.set(name === undefined ? `${service}/` : `${service}/${name}`, policy);
    }
  }
  return byName;
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Retries unary calls as `config` says (the client's default is SERVICE_CONFIG). Retries
 * stop while the client's recent calls fail more than retryThrottling allows, so a server
 * in trouble is not sent every call several times.
 */
export function retryInterceptor(config: ServiceConfig = SERVICE_CONFIG): Interceptor {
  const byName = policies(config);
  const throttling = config.retryThrottling;
  let tokens = throttling?.maxTokens ?? 0;
  const settle = (failed: boolean) => {
    if (throttling !== undefined) {
      tokens = failed ? Math.max(0, tokens - 1) : Math.min(throttling.maxTokens, tokens + throttling.tokenRatio);
    }
  };
  const mayRetry = () => throttling === undefined || tokens > throttling.maxTokens / 2;
  return (next) => async (req) => {
    const policy = req.stream
      ? undefined
      : (byName.get(`${req.service.typeName}/${req.method.name}`) ?? byName.get(`${req.service.typeName}/`));
    if (policy === undefined) {
      return next(req);
    }
    let backoffMs = policy.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await next(req);
        settle(false);
        return response;
      } catch (caught) {
        const error = asStatus(caught, req.signal);
        const retryable = policy.retryable.has(error.code);
        if (retryable) {
          settle(true);
        }
        if (!retryable || attempt >= policy.maxAttempts || req.signal.aborted || !mayRetry()) {
          throw error;
        }
      }
      await pause(Math.random() * backoffMs, req.signal);
      backoffMs = Math.min(backoffMs * policy.multiplier, policy.maxBackoffMs);
    }
  };
}
