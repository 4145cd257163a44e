// The BFF's memory: per signed-in browser, an AuthClient (its TokenManager holds the token
// pair) keyed by a random 256-bit id, the only thing the browser's cookie holds. A stolen
// cookie id is worthless elsewhere: the tokens it stands for never leave this process.
//
// Each browser session slides only with activity: the page reports it, and a report refreshes
// through the TokenManager (moving the server's idle deadline). A timer at the idle deadline
// finds out whether activity came: if not, one Refresh confirms the end with the server
// (SESSION_EXPIRED, IDLE_TIMEOUT) and every tab of the browser is told.

import { randomBytes } from "node:crypto";
import {
  AuthClient,
  DeviceType,
  Http2SessionManager,
  LogoutScope,
  SessionEndReason,
  SessionExpired,
  type SessionInfo,
} from "@authsvc/client";
import type { DeviceKind, DeviceSession, SessionEnded } from "../shared/api.js";
import { END_REASON_SENTENCES, endReasonName } from "../shared/end_reasons.js";
import { EventStream } from "./events.js";
import { log } from "./log.js";

/** An ended browser session stays this long, so its tabs that reconnect still hear why. */
const ENDED_KEPT_MS = 5 * 60_000;
/** How often ended sessions past ENDED_KEPT_MS are dropped. */
const SWEEP_MS = 60_000;
/** Past the idle deadline by this much before asking the server, so its clock agrees. */
const IDLE_CHECK_MARGIN_MS = 200;
/** A failed idle check (the server unreachable) is tried again after this long. */
const IDLE_RECHECK_MS = 5_000;
/** The page reports activity at most once a minute, more often for short idle timeouts. */
const MAX_ACTIVITY_INTERVAL_MS = 60_000;
/** Event streams (tabs) one browser session may hold open at once. */
const MAX_STREAMS = 32;
/** setTimeout's limit; a later deadline is checked again when this timer fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SignIn {
  email: string;
  /** Sensitive. */
  password: string;
  /** The browser's User-Agent, which authsvc turns into device, browser and OS. */
  userAgent: string;
  /** The browser's address, forwarded as x-forwarded-for. */
  clientIp: string;
}

// Bots and unrecognised software show as "unknown": the page has no icon for them.
const DEVICE_KINDS: ReadonlyMap<DeviceType, DeviceKind> = new Map([
  [DeviceType.DESKTOP, "desktop"],
  [DeviceType.MOBILE, "mobile"],
  [DeviceType.TABLET, "tablet"],
]);

function deviceKind(session: SessionInfo): DeviceKind {
  return DEVICE_KINDS.get(session.deviceType) ?? "unknown";
}

/** "Chrome 156.0" -> "Chrome 156": a browser's minor version means nothing to a person. */
function browserName(browser: string): string {
  return browser.replace(/^(.*\s\d+)\.\d+$/, "$1");
}

function deviceSession(session: SessionInfo): DeviceSession {
  return {
    id: session.sessionId,
    current: session.current,
    deviceType: deviceKind(session),
    browser: browserName(session.browser),
    os: session.os,
    ipAddress: session.ipAddress,
    location: [session.city, session.country].filter(Boolean).join(", "),
    lastActiveAt: session.lastActiveAt.toISOString(),
    createdAt: session.createdAt.toISOString(),
  };
}

// A sentence for every reason the client's enum has: a reason added to the proto fails to
// compile here until src/shared/end_reasons.ts says it in words.
const SENTENCES: Readonly<Record<keyof typeof SessionEndReason, string>> = END_REASON_SENTENCES;

function endedEvent(reason: SessionEndReason, endedAt: Date | undefined): SessionEnded {
  const name = endReasonName(SessionEndReason[reason] ?? "");
  return { reason: name, message: SENTENCES[name], endedAt: (endedAt ?? new Date()).toISOString() };
}

/** One signed-in browser: its authsvc session, the tabs listening, the idle deadline timer. */
export class BrowserSession {
  /** Sensitive: the cookie's value. Never logged. */
  readonly id: string;
  readonly client: AuthClient;
  readonly authSessionId: string;
  readonly userId: string;
  readonly activityIntervalMs: number;
  /** Set once the session is over; the tabs were told this. */
  ended: SessionEnded | undefined;
  endedAtMs = 0;
  readonly #streams = new Set<EventStream>();
  readonly #onEnd: (session: BrowserSession) => void;
  #lastRefreshMs = Date.now();
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(init: {
    client: AuthClient;
    authSessionId: string;
    userId: string;
    idleTimeoutMs: number;
    onEnd: (session: BrowserSession) => void;
  }) {
    this.id = randomBytes(32).toString("base64url");
    this.client = init.client;
    this.authSessionId = init.authSessionId;
    this.userId = init.userId;
    this.activityIntervalMs = Math.max(1_000, Math.min(MAX_ACTIVITY_INTERVAL_MS, Math.floor(init.idleTimeoutMs / 4)));
    this.#onEnd = init.onEnd;
    this.scheduleIdleCheck();
  }

  get live(): boolean {
    return this.ended === undefined;
  }

  /** Whether another tab may listen: a cookie is not a licence for unbounded streams. */
  get mayListen(): boolean {
    return this.#streams.size < MAX_STREAMS;
  }

  /** A tab's event stream; a tab that connects after the end hears it at once. */
  listen(stream: EventStream): () => void {
    this.#streams.add(stream);
    if (this.ended !== undefined) {
      stream.sessionEnded(this.ended);
    }
    return () => this.#streams.delete(stream);
  }

  /**
   * The person is active: slide the session. Several tabs report, each at most once per
   * interval; one refresh per half interval is enough to keep the deadline far ahead.
   */
  async activity(): Promise<void> {
    if (Date.now() - this.#lastRefreshMs < this.activityIntervalMs / 2) {
      return;
    }
    this.#lastRefreshMs = Date.now();
    await this.client.refresh();
  }

  async listDevices(): Promise<DeviceSession[]> {
    const devices: DeviceSession[] = [];
    for await (const session of this.client.iterSessions(100)) {
      devices.push(deviceSession(session));
    }
    // This device first, then the others by most recent activity (authsvc's order).
    return devices.sort((a, b) => Number(b.current) - Number(a.current));
  }

  async revokeDevice(sessionId: string): Promise<void> {
    await this.client.revokeSession(sessionId);
  }

  async revokeOtherDevices(): Promise<number> {
    return this.client.logout(LogoutScope.OTHER_SESSIONS);
  }

  /** (Re)arm the check at the idle deadline, which every refresh moves. */
  scheduleIdleCheck(): void {
    clearTimeout(this.#idleTimer);
    const deadline = this.client.tokens.tokens?.refreshTokenExpiresAt;
    if (deadline === undefined || this.ended !== undefined) {
      return;
    }
    const waitMs = Math.min(MAX_TIMER_MS, Math.max(0, deadline.getTime() - Date.now() + IDLE_CHECK_MARGIN_MS));
    this.#idleTimer = setTimeout(() => void this.#checkIdle(), waitMs);
    this.#idleTimer.unref();
  }

  /** The session is over (the server said so, or the feed did): tell every tab, once. */
  end(reason: SessionEndReason, endedAt: Date | undefined): void {
    if (this.ended !== undefined) {
      return;
    }
    this.ended = endedEvent(reason, endedAt);
    this.endedAtMs = Date.now();
    clearTimeout(this.#idleTimer);
    for (const stream of this.#streams) {
      stream.sessionEnded(this.ended);
    }
    log("session_ended", { user_id: this.userId, session_id: this.authSessionId, reason: this.ended.reason });
    this.#onEnd(this);
  }

  /** Close every tab's stream and the client; the session is forgotten. */
  dispose(): void {
    clearTimeout(this.#idleTimer);
    for (const stream of this.#streams) {
      stream.close();
    }
    this.#streams.clear();
    this.client.close();
  }

  async #checkIdle(): Promise<void> {
    const deadline = this.client.tokens.tokens?.refreshTokenExpiresAt;
    if (this.ended !== undefined || deadline === undefined) {
      return;
    }
    if (deadline.getTime() > Date.now()) {
      this.scheduleIdleCheck(); // slid meanwhile, or the timer's limit
      return;
    }
    try {
      // Past the deadline this Refresh is refused (SESSION_EXPIRED, IDLE_TIMEOUT), and the
      // TokenManager's onSessionExpired ends this session; it cannot slide it any more.
      await this.client.refresh();
    } catch (error) {
      if (!(error instanceof SessionExpired)) {
        log("idle_check_failed", { session_id: this.authSessionId, reason: (error as { reason?: string }).reason });
        this.#idleTimer = setTimeout(() => void this.#checkIdle(), IDLE_RECHECK_MS);
        this.#idleTimer.unref();
      }
    }
  }
}

/**
 * Every signed-in browser of this BFF, bounded by `maxSessions` (the least recently seen is
 * signed out to make room). Ended sessions are kept ENDED_KEPT_MS for their tabs, then dropped.
 */
export class SessionStore {
  readonly #authsvcUrl: string;
  readonly #maxSessions: number;
  /** One HTTP/2 connection for every browser's client. */
  readonly #connection: Http2SessionManager;
  /** Cookie id -> session, least recently seen first (get() moves one to the end). */
  readonly #byId = new Map<string, BrowserSession>();
  /** authsvc session id -> live session, for the revocation feed. */
  readonly #byAuthSession = new Map<string, BrowserSession>();
  readonly #sweeper: NodeJS.Timeout;

  constructor(options: { authsvcUrl: string; maxSessions: number }) {
    this.#authsvcUrl = options.authsvcUrl;
    this.#maxSessions = options.maxSessions;
    this.#connection = new Http2SessionManager(options.authsvcUrl);
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
    this.#sweeper.unref();
  }

  get size(): number {
    return this.#byId.size;
  }

  /** Log in at authsvc as the browser (its User-Agent and address) and remember the session. */
  async signIn(input: SignIn): Promise<BrowserSession> {
    let session: BrowserSession | undefined;
    const client = new AuthClient({
      baseUrl: this.#authsvcUrl,
      connection: this.#connection,
      userAgent: input.userAgent,
      onTokens: () => session?.scheduleIdleCheck(),
      onSessionExpired: (error) => session?.end(error.endReason, error.endedAt),
    });
    const tokens = await client.login(
      { email: input.email, password: input.password },
      { headers: { "x-forwarded-for": input.clientIp } },
    ).catch((error: unknown) => {
      client.close();
      throw error;
    });
    try {
      // The idle timeout as the server applies it, never configured here a second time.
      const current = await client.getSession(tokens.sessionId);
      session = new BrowserSession({
        client,
        authSessionId: tokens.sessionId,
        userId: tokens.userId,
        idleTimeoutMs: current.idleExpiresAt.getTime() - current.lastActiveAt.getTime(),
        onEnd: (ended) => this.#byAuthSession.delete(ended.authSessionId),
      });
    } catch (error) {
      // Signed in at authsvc, but not here: end that session rather than orphan it.
      await client.logout().catch(() => undefined);
      client.close();
      throw error;
    }
    this.#makeRoom();
    this.#byId.set(session.id, session);
    this.#byAuthSession.set(session.authSessionId, session);
    log("signed_in", { user_id: session.userId, session_id: session.authSessionId });
    return session;
  }

  /** The session behind a cookie id, live or ended; counts as seeing the browser. */
  get(id: string | undefined): BrowserSession | undefined {
    const session = id === undefined ? undefined : this.#byId.get(id);
    if (session !== undefined) {
      this.#byId.delete(session.id);
      this.#byId.set(session.id, session);
    }
    return session;
  }

  /** The revocation feed says an authsvc session ended: if it is one of ours, end it. */
  revoked(authSessionId: string, reason: SessionEndReason, endedAt: Date): void {
    this.#byAuthSession.get(authSessionId)?.end(reason, endedAt);
  }

  /** Logout at authsvc (the session ends there too), tell the browser's other tabs, forget it. */
  async signOut(session: BrowserSession): Promise<void> {
    if (session.live) {
      try {
        await session.client.logout();
      } finally {
        session.end(SessionEndReason.USER_LOGOUT, new Date());
      }
    }
    this.#forget(session);
  }

  /** Forget every session (their authsvc sessions stay, as after a BFF restart). */
  close(): void {
    clearInterval(this.#sweeper);
    for (const session of this.#byId.values()) {
      session.dispose();
    }
    this.#byId.clear();
    this.#byAuthSession.clear();
    this.#connection.abort();
  }

  #forget(session: BrowserSession): void {
    this.#byId.delete(session.id);
    if (this.#byAuthSession.get(session.authSessionId) === session) {
      this.#byAuthSession.delete(session.authSessionId);
    }
    session.dispose();
  }

  #makeRoom(): void {
    while (this.#byId.size >= this.#maxSessions) {
      const oldest = this.#byId.values().next().value;
      if (oldest === undefined) {
        return;
      }
      if (oldest.live) {
        // Its tokens exist only here: end the authsvc session rather than orphan it.
        void oldest.client.logout().catch(() => undefined);
        log("session_evicted", { session_id: oldest.authSessionId });
      }
      this.#forget(oldest);
    }
  }

  #sweep(): void {
    const cutoff = Date.now() - ENDED_KEPT_MS;
    for (const session of [...this.#byId.values()]) {
      if (!session.live && session.endedAtMs < cutoff) {
        this.#forget(session);
      }
    }
  }
}
