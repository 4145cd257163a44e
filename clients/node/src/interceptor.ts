// A Connect interceptor that sends `authorization: Bearer <access token>` from a TokenManager,
// retries a unary call once with a renewed token when the server answers TOKEN_EXPIRED, and
// tells the manager when a call says the session is over.

import { ConnectError, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { AuthsvcError, SessionExpired, TokenExpired, toAuthsvcError } from "./errors.js";
import { AuthService } from "./gen/authsvc/v1/auth_service_pb.js";
import type { TokenManager } from "./token_manager.js";

/** The AuthService methods that act for a user and need the access token. */
const AUTHENTICATED_METHODS: ReadonlySet<string> = new Set([
  "Logout",
  "ListSessions",
  "RevokeSession",
  "ChangePassword",
  "GetSession",
  "StepUp",
  "ListFactors",
  "EnrolTotp",
  "ConfirmTotp",
  "RemoveFactor",
  "RegenerateRecoveryCodes",
  "BeginPasskeyRegistration",
  "FinishPasskeyRegistration",
]);

export interface AuthInterceptorOptions {
  /**
   * Which calls get the token. Default: on AuthService only the calls of a signed-in user
   * (Logout, ListSessions, RevokeSession, ChangePassword, GetSession, StepUp and the factor
   * RPCs; the others act for no signed-in user, Refresh is what the manager itself calls)
   * and not a call that carries a pending login token instead; on any other service, every
   * call.
   */
  needsToken?: (req: UnaryRequest | StreamRequest) => boolean;
}

function defaultNeedsToken(req: UnaryRequest | StreamRequest): boolean {
  if (req.service.typeName !== AuthService.typeName) {
    return true;
  }
  // An enrolment before the first sign-in is authenticated by its pending login, not a session.
  const pending = req.stream ? "" : (req.message as { pendingLoginToken?: unknown }).pendingLoginToken;
  return AUTHENTICATED_METHODS.has(req.method.name) && (typeof pending !== "string" || pending === "");
}

// Connect wraps whatever an interceptor throws in a ConnectError of code UNKNOWN. Wrap a
// typed error here instead, with its own code; toAuthsvcError() unwraps it again.
async function orConnectError<T>(get: () => Promise<T>): Promise<T> {
  try {
    return await get();
  } catch (error) {
    if (error instanceof AuthsvcError) {
      throw new ConnectError(error.rawMessage, error.code, undefined, undefined, error);
    }
    throw error;
  }
}

/**
 * Attach the manager's access token to each call that needs one (a call that already has
 * `authorization` is left alone; without a session the call goes without it). A unary call
 * rejected with TOKEN_EXPIRED is sent once more with a renewed token; streaming calls are
 * not retried (their request stream cannot be replayed). A call that fails because the
 * session is over (SessionExpired) ends the manager's session.
 */
export function authInterceptor(tokens: TokenManager, options: AuthInterceptorOptions = {}): Interceptor {
  const needsToken = options.needsToken ?? defaultNeedsToken;
  return (next) => async (req) => {
    if (!needsToken(req) || req.header.has("authorization")) {
      return next(req);
    }
    let token = await orConnectError(() => tokens.accessToken());
    if (token === undefined) {
      return next(req);
    }
    req.header.set("authorization", `Bearer ${token}`);
    try {
      try {
        return await next(req);
      } catch (error) {
        if (req.stream || !(toAuthsvcError(error) instanceof TokenExpired)) {
          throw error;
        }
        const rejected = token;
        token = await orConnectError(() => tokens.renew(rejected));
        req.header.set("authorization", `Bearer ${token}`);
      }
      return await next(req);
    } catch (error) {
      const typed = toAuthsvcError(error);
      if (!(typed instanceof SessionExpired)) {
        throw error;
      }
      tokens.endSession(token, typed);
      // Hand the caller the very SessionExpired the manager now throws to everyone.
      const connectError = ConnectError.from(error);
      connectError.cause ??= typed;
      throw connectError;
    }
  };
}
