// The backend-for-frontend: the page's files and its JSON API on node:http, with the token
// pairs held in SessionStore and the revocation feed fanned out to the tabs over SSE.
// The HTTP contract is in the README ("The API").

import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { AuthClient, type RevocationFeed } from "@authsvc/client";
import type { PasskeyAdded, RevokedCount, SessionList, SessionState } from "../shared/api.js";
import type { Config } from "./config.js";
import { Csrf, type CsrfScope } from "./csrf.js";
import { httpErrorOf } from "./errors.js";
import { EventStream } from "./events.js";
import {
  cookie,
  HttpError,
  readCookies,
  readJson,
  redirect,
  refuseBody,
  sendJson,
  sendNoContent,
  setSecurityHeaders,
} from "./http.js";
import { log } from "./log.js";
import type { PasskeyCeremony } from "./passkeys.js";
import { followRevocations } from "./revocations.js";
import { type BrowserSession, SessionStore } from "./sessions.js";
import { loadStaticFiles, type StaticFile } from "./static.js";

/** A pre-session (the login form's CSRF scope) lasts this long without a sign-in. */
const PRE_SESSION_SECONDS = 60 * 60;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const COOKIE_ID = /^[A-Za-z0-9_-]{43}$/;
// The longest email (RFC 5321) and the longest password authsvc accepts.
const MAX_EMAIL = 254;
const MAX_PASSWORD = 256;
// A passkey's label, as authsvc bounds it; a credential's JSON fits the body limit.
const MAX_PASSKEY_NAME = 100;
const NOT_SIGNED_IN = new HttpError(401, { error: "NOT_SIGNED_IN", message: "You are not signed in." });

export interface RunningBff {
  url: string;
  close(): Promise<void>;
}

interface Cookies {
  session: string;
  preSession: string;
  secure: boolean;
}

/** `__Host-` binds a cookie to this origin over TLS; browsers refuse the prefix without Secure. */
function cookieNames(secure: boolean): Cookies {
  return secure
    ? { session: "__Host-sid", preSession: "__Host-psid", secure }
    : { session: "sid", preSession: "psid", secure };
}

function newId(): string {
  return randomBytes(32).toString("base64url");
}

/** "::ffff:10.0.0.1" is the IPv4 address 10.0.0.1. */
function plainAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

export class Bff {
  readonly #config: Config;
  readonly #files: Map<string, StaticFile>;
  readonly #csrf: Csrf;
  readonly #cookies: Cookies;
  readonly #store: SessionStore;
  readonly #feedClient: AuthClient;
  readonly #feed: RevocationFeed;

  constructor(config: Config, files: Map<string, StaticFile>) {
    this.#config = config;
    this.#files = files;
    this.#csrf = new Csrf(config.csrfSecret);
    this.#cookies = cookieNames(config.publicOrigin?.startsWith("https:") ?? false);
    this.#store = new SessionStore({
      authsvcUrl: config.authsvcUrl,
      maxSessions: config.maxSessions,
      maxSessionsPerUser: config.maxSessionsPerUser,
    });
    // The service key is on this client only, never on a browser's.
    this.#feedClient = new AuthClient({ baseUrl: config.authsvcUrl, serviceKey: config.serviceKey });
    this.#feed = followRevocations(this.#feedClient, (revocation) =>
      this.#store.revoked(revocation.sessionId, revocation.reason, revocation.revokedAt),
    );
  }

  /** Serve on the configured host and port until close(). */
  static async start(config: Config, root: string): Promise<RunningBff> {
    const bff = new Bff(config, await loadStaticFiles(root));
    const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
      void bff.handle(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(config.port, config.host, () => resolve());
    });
    const { address, port } = server.address() as AddressInfo;
    const host = address.includes(":") ? `[${address}]` : address;
    return {
      url: `http://${host}:${port}`,
      close: async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        // Event streams never end by themselves; the store ends them.
        await bff.close();
        server.closeAllConnections();
        await closed;
      },
    };
  }

  async close(): Promise<void> {
    await this.#feed.close();
    this.#feedClient.close();
    this.#store.close();
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    setSecurityHeaders(res);
    try {
      await this.#route(req, res);
    } catch (caught) {
      const error = httpErrorOf(caught);
      if (error.status >= 500) {
        log("request_failed", { method: req.method, path: pathOf(req), status: error.status, reason: error.answer.error });
      }
      if (res.headersSent) {
        res.destroy();
      } else {
        sendJson(res, error.status, error.answer, error.headers);
      }
    }
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req);
    const method = req.method ?? "GET";
    const route = `${method} ${path}`;
    switch (route) {
      case "GET /":
        return this.#page(req, res, "/");
      case "GET /login":
        return this.#page(req, res, "/login");
      case "GET /api/session":
        return this.#session(req, res);
      case "POST /api/login":
        return this.#login(req, res);
      case "POST /api/passkey-login/options":
        return this.#passkeyLoginOptions(req, res);
      case "POST /api/passkey-login":
        return this.#passkeyLogin(req, res);
      case "POST /api/passkeys/options":
        return this.#passkeyOptions(req, res);
      case "POST /api/passkeys":
        return this.#addPasskey(req, res);
      case "GET /api/sessions":
        return this.#listDevices(req, res);
      case "POST /api/sessions/revoke-others":
        return this.#revokeOthers(req, res);
      case "POST /api/activity":
        return this.#activity(req, res);
      case "POST /api/logout":
        return this.#logout(req, res);
      case "GET /api/events":
        return this.#events(req, res);
      case "GET /favicon.ico":
        return sendNoContent(res); // none, and no 404 in the browser's console
    }
    if (method === "DELETE" && path.startsWith("/api/sessions/")) {
      return this.#revokeDevice(req, res, path.slice("/api/sessions/".length));
    }
    if (path.startsWith("/api/")) {
      throw new HttpError(404, { error: "NOT_FOUND", message: "No such API." });
    }
    const file = method === "GET" || method === "HEAD" ? this.#files.get(path) : undefined;
    if (file === undefined || path === "/" || path === "/login") {
      throw new HttpError(404, { error: "NOT_FOUND", message: "No such page." });
    }
    this.#sendFile(res, file);
  }

  #page(req: IncomingMessage, res: ServerResponse, page: "/" | "/login"): void {
    const session = this.#browserSession(req);
    const signedIn = session?.live ?? false;
    const expired = new URL(req.url ?? "/", "http://x").searchParams.has("expired");
    if (page === "/" && !signedIn) {
      return redirect(res, "/login");
    }
    if (page === "/login" && signedIn && !expired) {
      return redirect(res, "/");
    }
    this.#sendFile(res, this.#files.get(page) as StaticFile);
  }

  #sendFile(res: ServerResponse, file: StaticFile): void {
    res.writeHead(200, { "Content-Type": file.type, "Content-Length": file.body.length, "Cache-Control": "no-cache" });
    res.end(file.body);
  }

  #session(req: IncomingMessage, res: ServerResponse): void {
    const session = this.#browserSession(req);
    if (session?.live) {
      const state: SessionState = {
        signedIn: true,
        csrfToken: this.#csrf.token("session", session.id),
        activityIntervalMs: session.activityIntervalMs,
        user: { id: session.userId },
      };
      return sendJson(res, 200, state);
    }
    // Not signed in: a pre-session id scopes the login form's CSRF token.
    const cookies = readCookies(req);
    const sent = cookies.get(this.#cookies.preSession);
    const preSession = sent !== undefined && COOKIE_ID.test(sent) ? sent : newId();
    const setCookies = [cookie(this.#cookies.preSession, preSession, { secure: this.#cookies.secure, maxAgeSeconds: PRE_SESSION_SECONDS })];
    if (cookies.has(this.#cookies.session)) {
      setCookies.push(this.#clearSessionCookie());
    }
    res.setHeader("Set-Cookie", setCookies);
    const state: SessionState = { signedIn: false, csrfToken: this.#csrf.token("pre-session", preSession), activityIntervalMs: 60_000 };
    sendJson(res, 200, state);
  }

  async #login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.#checkCsrf(req, "pre-session", readCookies(req).get(this.#cookies.preSession));
    const body = await readJson(req);
    const { email, password } = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    if (typeof email !== "string" || typeof password !== "string" || email.length === 0 || password.length === 0) {
      throw new HttpError(400, { error: "INVALID_FIELD", message: "Enter your email and password." });
    }
    if (email.length > MAX_EMAIL || password.length > MAX_PASSWORD) {
      throw new HttpError(400, { error: "INVALID_FIELD", message: "The email or password is too long." });
    }
    let session: BrowserSession;
    try {
      // One browser, one session: the new one replaces (and signs out) the cookie's current one.
      session = await this.#store.signIn(
        { email, password, userAgent: req.headers["user-agent"] ?? "", clientIp: this.#clientIp(req) },
        this.#browserSession(req),
      );
    } catch (error) {
      log("sign_in_refused", { reason: httpErrorOf(error).answer.error });
      throw error;
    }
    this.#signedIn(res, session);
  }

  /** A new id at sign-in: an id planted before it (session fixation) is never signed in. */
  #signedIn(res: ServerResponse, session: BrowserSession): void {
    res.setHeader("Set-Cookie", [
      cookie(this.#cookies.session, session.id, { secure: this.#cookies.secure }),
      cookie(this.#cookies.preSession, "", { secure: this.#cookies.secure, maxAgeSeconds: 0 }),
    ]);
    sendNoContent(res);
  }

  /** The login page's "Sign in with a passkey", step one: authsvc's request options. */
  async #passkeyLoginOptions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    refuseBody(req);
    this.#checkCsrf(req, "pre-session", readCookies(req).get(this.#cookies.preSession));
    const ceremony: PasskeyCeremony = await this.#store.beginPasskeyLogin();
    sendJson(res, 200, ceremony);
  }

  /** Step two: the browser's assertion signs in, as the password form does. */
  async #passkeyLogin(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.#checkCsrf(req, "pre-session", readCookies(req).get(this.#cookies.preSession));
    const { challengeId, credentialJson } = passkeyAnswer(await readJson(req));
    let session: BrowserSession;
    try {
      session = await this.#store.signInWithPasskey(
        { challengeId, credentialJson, userAgent: req.headers["user-agent"] ?? "", clientIp: this.#clientIp(req) },
        this.#browserSession(req),
      );
    } catch (error) {
      log("sign_in_refused", { reason: httpErrorOf(error).answer.error, method: "passkey" });
      throw error;
    }
    this.#signedIn(res, session);
  }

  /** The device page's "Add a passkey", step one: authsvc's creation options. */
  async #passkeyOptions(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const session = this.#mutating(req);
    const ceremony: PasskeyCeremony = await session.beginPasskeyRegistration(passkeyName(req));
    sendJson(res, 200, ceremony);
  }

  /** Step two: the browser's new credential, verified and kept by authsvc. */
  async #addPasskey(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const session = this.#liveSession(req);
    this.#checkCsrf(req, "session", session.id);
    const { challengeId, credentialJson } = passkeyAnswer(await readJson(req));
    const added: PasskeyAdded = { name: await session.finishPasskeyRegistration(challengeId, credentialJson) };
    sendJson(res, 201, added);
  }

  async #listDevices(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const session = this.#liveSession(req);
    const list: SessionList = { sessions: await session.listDevices() };
    sendJson(res, 200, list);
  }

  async #revokeDevice(req: IncomingMessage, res: ServerResponse, sessionId: string): Promise<void> {
    const session = this.#mutating(req);
    if (!UUID.test(sessionId)) {
      throw new HttpError(400, { error: "INVALID_FIELD", message: "That is not a session id." });
    }
    await session.revokeDevice(sessionId.toLowerCase());
    sendNoContent(res);
  }

  async #revokeOthers(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const session = this.#mutating(req);
    const answer: RevokedCount = { revoked: await session.revokeOtherDevices() };
    sendJson(res, 200, answer);
  }

  async #activity(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const session = this.#mutating(req);
    await session.activity();
    sendNoContent(res);
  }

  async #logout(req: IncomingMessage, res: ServerResponse): Promise<void> {
    refuseBody(req);
    const session = this.#browserSession(req);
    if (session !== undefined) {
      this.#checkCsrf(req, "session", session.id);
      await this.#store.signOut(session);
    }
    sendNoContent(res, { "Set-Cookie": this.#clearSessionCookie() });
  }

  #events(req: IncomingMessage, res: ServerResponse): void {
    const session = this.#browserSession(req);
    if (session === undefined) {
      // Not 200: the EventSource gives up instead of reconnecting; the page then asks /api/session.
      throw NOT_SIGNED_IN;
    }
    if (!session.mayListen) {
      throw new HttpError(429, { error: "TOO_MANY_STREAMS", message: "Close some of this site's tabs." });
    }
    let stopListening: () => void = () => undefined;
    const stream = new EventStream(res, () => stopListening());
    stopListening = session.listen(stream);
  }

  /** The session behind the request's cookie, live or ended. */
  #browserSession(req: IncomingMessage): BrowserSession | undefined {
    const id = readCookies(req).get(this.#cookies.session);
    return id !== undefined && COOKIE_ID.test(id) ? this.#store.get(id) : undefined;
  }

  #liveSession(req: IncomingMessage): BrowserSession {
    const session = this.#browserSession(req);
    if (session === undefined) {
      throw NOT_SIGNED_IN;
    }
    if (session.ended !== undefined) {
      throw new HttpError(401, { error: "SESSION_EXPIRED", message: session.ended.message });
    }
    return session;
  }

  /** A state-changing request of a signed-in browser: no body, a live session, CSRF checked. */
  #mutating(req: IncomingMessage): BrowserSession {
    refuseBody(req);
    const session = this.#liveSession(req);
    this.#checkCsrf(req, "session", session.id);
    return session;
  }

  #checkCsrf(req: IncomingMessage, scope: CsrfScope, id: string | undefined): void {
    const origin = this.#config.publicOrigin ?? `http://${req.headers.host ?? ""}`;
    this.#csrf.check(req, origin, scope, id);
  }

  #clearSessionCookie(): string {
    return cookie(this.#cookies.session, "", { secure: this.#cookies.secure, maxAgeSeconds: 0 });
  }

  /**
   * The browser's address: the peer's, or, when the peer is a trusted proxy, the rightmost
   * X-Forwarded-For hop that is not one (as authsvc reads it), so a browser cannot choose it.
   */
  #clientIp(req: IncomingMessage): string {
    let address = plainAddress(req.socket.remoteAddress ?? "");
    const trusted = (ip: string) =>
      this.#config.trustedProxies.check(ip, ip.includes(":") ? "ipv6" : "ipv4");
    const forwarded = req.headers["x-forwarded-for"];
    if (typeof forwarded === "string" && address !== "" && trusted(address)) {
      for (const hop of forwarded.split(",").map((h) => plainAddress(h.trim())).reverse()) {
        if (hop === "" || !/^[0-9a-fA-F.:]+$/.test(hop)) {
          break;
        }
        address = hop;
        if (!trusted(hop)) {
          break;
        }
      }
    }
    return address;
  }
}

/** `{challengeId, credential}` of a passkey ceremony's second step; the credential as JSON text. */
function passkeyAnswer(body: unknown): { challengeId: string; credentialJson: string } {
  const { challengeId, credential } = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  if (typeof challengeId !== "string" || !UUID.test(challengeId) || typeof credential !== "object" || credential === null) {
    throw new HttpError(400, { error: "INVALID_FIELD", message: "The passkey's answer is incomplete. Try again." });
  }
  return { challengeId, credentialJson: JSON.stringify(credential) };
}

/** The label for a new passkey: `?name=`, else one naming the browser it was made in. */
function passkeyName(req: IncomingMessage): string {
  const given = new URL(req.url ?? "/", "http://x").searchParams.get("name")?.trim() ?? "";
  return (given || "Passkey").slice(0, MAX_PASSKEY_NAME);
}

function pathOf(req: IncomingMessage): string {
  const url = req.url ?? "/";
  const end = url.indexOf("?");
  return end === -1 ? url : url.slice(0, end);
}
