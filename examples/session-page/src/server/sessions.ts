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
  AssuranceLevel,
  AuthClient,
  DeviceType,
  Http2SessionManager,
  LogoutScope,
  SessionEndReason,
  SessionExpired,
  type SessionInfo,
  type Tokens,
} from "@authsvc/client";
import type { DeviceKind, DeviceSession, SessionEnded } from "../shared/api.js";
import { END_REASON_SENTENCES, endReasonName } from "../shared/end_reasons.js";
import { EventStream } from "./events.js";
import { log } from "./log.js";
import {
  beginPasskeyLogin,
  beginRegistration,
  finishRegistration,
  passkeyLogin,
  type PasskeyCeremony,
} from "./passkeys.js";

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
/** A full store's hint to try again: slots free as people sign out or idle out. */
const STORE_FULL_RETRY_MS = 60_000;

/**
 * Every slot of the store holds a live session, so the sign-in is refused before authsvc's
 * Login: making room would sign out someone who did nothing wrong.
 */
export class SessionStoreFull extends Error {
  constructor(readonly retryAfterMs: number) {
    super("every slot of the session store holds a live session");
    this.name = "SessionStoreFull";
  }
}

export interface SignIn {
  email: string;
  /** Sensitive. */
  password: string;
  /** The browser's User-Agent, which authsvc turns into device, browser and OS. */
  userAgent: string;
  /** The browser's address, forwarded as x-forwarded-for. */
  clientIp: string;
}

/** A sign-in with a passkey: the browser's assertion for a challenge from beginPasskeyLogin. */
export interface PasskeySignIn {
  challengeId: string;
  credentialJson: string;
  userAgent: string;
  clientIp: string;
}

/** How a fresh client signs in, as the browser (its x-forwarded-for in `headers`). */
type Authenticate = (client: AuthClient, headers: Record<string, string>) => Promise<Tokens>;

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
    twoFactor: session.assuranceLevel === AssuranceLevel.AAL2,
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

  /** Creation options for a new passkey of this user (authsvc asks for a recent sign-in). */
  async beginPasskeyRegistration(name: string): Promise<PasskeyCeremony> {
    return beginRegistration(this.client, name);
  }

  /** Add the passkey the browser created; the other sessions of the user end. Its name. */
  async finishPasskeyRegistration(challengeId: string, credentialJson: string): Promise<string> {
    return finishRegistration(this.client, challengeId, credentialJson);
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
 * Every signed-in browser of this BFF, bounded so that nobody's sign-in signs anybody else
 * out: a user holds at most `maxSessionsPerUser` live sessions (a further sign-in signs out
 * that user's least recently seen one), and when all `maxSessions` slots hold live sessions
 * a new sign-in is refused with SessionStoreFull. Ended sessions are kept ENDED_KEPT_MS for
 * their tabs, or until their slot is needed.
 */
export class SessionStore {
  readonly #authsvcUrl: string;
  readonly #maxSessions: number;
  readonly #maxSessionsPerUser: number;
  /** One HTTP/2 connection for every browser's client. */
  readonly #connection: Http2SessionManager;
  /** Signed in as nobody: begins passkey sign-ins, which have no user yet. */
  readonly #anonymous: AuthClient;
  /** Cookie id -> session, live or ended, least recently seen first (get() moves one to the end). */
  readonly #byId = new Map<string, BrowserSession>();
  /** authsvc session id -> live session, for the revocation feed; its size is the live count. */
  readonly #byAuthSession = new Map<string, BrowserSession>();
  /** User id -> that user's live sessions, least recently seen first. */
  readonly #byUser = new Map<string, Set<BrowserSession>>();
  /** Slots held by sign-ins waiting on authsvc, so concurrent ones cannot overfill the store. */
  #signingIn = 0;
  readonly #sweeper: NodeJS.Timeout;

  constructor(options: { authsvcUrl: string; maxSessions: number; maxSessionsPerUser: number }) {
    this.#authsvcUrl = options.authsvcUrl;
    this.#maxSessions = options.maxSessions;
    this.#maxSessionsPerUser = options.maxSessionsPerUser;
    this.#connection = new Http2SessionManager(options.authsvcUrl);
    this.#anonymous = new AuthClient({ baseUrl: options.authsvcUrl, connection: this.#connection });
    this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS);
    this.#sweeper.unref();
  }

  get size(): number {
    return this.#byId.size;
  }

  /**
   * Log in at authsvc as the browser (its User-Agent and address) and remember the session.
   * `replacing` is the browser's current session, which the new one replaces: its slot
   * counts as free, and it is signed out once the new one exists. A user already at
   * `maxSessionsPerUser` loses their least recently seen session (SESSION_LIMIT_EVICTED).
   * Throws SessionStoreFull, without calling authsvc, when every slot holds a live session.
   */
  async signIn(input: SignIn, replacing?: BrowserSession): Promise<BrowserSession> {
    const { email, password } = input;
    return this.#admit(input.userAgent, input.clientIp, replacing, (client, headers) =>
      client.login({ email, password }, { headers }),
    );
  }

  /** Request options for a passkey sign-in (any discoverable passkey of this site). */
  async beginPasskeyLogin(): Promise<PasskeyCeremony> {
    return beginPasskeyLogin(this.#anonymous);
  }

  /** As signIn, with a passkey's assertion instead of a password (authsvc's PasskeyLogin). */
  async signInWithPasskey(input: PasskeySignIn, replacing?: BrowserSession): Promise<BrowserSession> {
    const { challengeId, credentialJson } = input;
    return this.#admit(input.userAgent, input.clientIp, replacing, (client, headers) =>
      passkeyLogin(client, challengeId, credentialJson, headers),
    );
  }

  async #admit(
    userAgent: string,
    clientIp: string,
    replacing: BrowserSession | undefined,
    authenticate: Authenticate,
  ): Promise<BrowserSession> {
    this.#holdSlot(replacing);
    let session: BrowserSession;
    try {
      session = await this.#logIn(userAgent, clientIp, authenticate);
    } finally {
      this.#signingIn -= 1;
    }
    // No await from here to the insert, so the caps hold however sign-ins interleave.
    const loggingOut: BrowserSession[] = [];
    if (replacing !== undefined) {
      if (replacing.live) {
        replacing.end(SessionEndReason.USER_LOGOUT, new Date());
        loggingOut.push(replacing);
      }
      this.#byId.delete(replacing.id);
    }
    for (const evicted of this.#beyondUserCap(session.userId)) {
      evicted.end(SessionEndReason.SESSION_LIMIT_EVICTED, new Date());
      log("session_evicted", { user_id: evicted.userId, session_id: evicted.authSessionId });
      loggingOut.push(evicted); // stays, ended, so its tabs can still hear why
    }
    this.#byId.set(session.id, session);
    this.#byAuthSession.set(session.authSessionId, session);
    const mine = this.#byUser.get(session.userId) ?? new Set<BrowserSession>();
    this.#byUser.set(session.userId, mine.add(session));
    log("signed_in", { user_id: session.userId, session_id: session.authSessionId });
    // Their tokens exist only here: end their authsvc sessions too, rather than orphan them.
    await Promise.all(loggingOut.map((old) => old.client.logout().catch(() => undefined)));
    replacing?.dispose();
    return session;
  }

  /** The session behind a cookie id, live or ended; counts as seeing the browser. */
  get(id: string | undefined): BrowserSession | undefined {
    const session = id === undefined ? undefined : this.#byId.get(id);
    if (session !== undefined) {
      this.#byId.delete(session.id);
      this.#byId.set(session.id, session);
      const mine = this.#byUser.get(session.userId);
      if (mine?.delete(session)) {
        mine.add(session);
      }
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
    this.#anonymous.close();
    for (const session of this.#byId.values()) {
      session.dispose();
    }
    this.#byId.clear();
    this.#byAuthSession.clear();
    this.#byUser.clear();
    this.#connection.abort();
  }

  /** Reserve a slot for a sign-in, or refuse it: a full store signs nobody out to make room. */
  #holdSlot(replacing: BrowserSession | undefined): void {
    const freed = replacing?.live && this.#byId.get(replacing.id) === replacing ? 1 : 0;
    if (this.#byId.size - freed + this.#signingIn >= this.#maxSessions) {
      this.#dropEnded();
    }
    if (this.#byAuthSession.size - freed + this.#signingIn >= this.#maxSessions) {
      throw new SessionStoreFull(STORE_FULL_RETRY_MS);
    }
    this.#signingIn += 1;
  }

  /** Log in at authsvc with a client of its own for this browser; nothing is stored yet. */
  async #logIn(userAgent: string, clientIp: string, authenticate: Authenticate): Promise<BrowserSession> {
    let session: BrowserSession | undefined;
    const client = new AuthClient({
      baseUrl: this.#authsvcUrl,
      connection: this.#connection,
      userAgent,
      onTokens: () => session?.scheduleIdleCheck(),
      onSessionExpired: (error) => session?.end(error.endReason, error.endedAt),
    });
    const tokens = await authenticate(client, { "x-forwarded-for": clientIp }).catch((error: unknown) => {
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
        onEnd: (ended) => this.#unindexLive(ended),
      });
      return session;
    } catch (error) {
      // Signed in at authsvc, but not here: end that session rather than orphan it.
      await client.logout().catch(() => undefined);
      client.close();
      throw error;
    }
  }

  /** The user's least recently seen live sessions that must go to make room for one more. */
  #beyondUserCap(userId: string): BrowserSession[] {
    const mine = [...(this.#byUser.get(userId) ?? [])];
    return mine.slice(0, Math.max(0, mine.length - this.#maxSessionsPerUser + 1));
  }

  /** Out of the indexes of live sessions (it ended, or is forgotten). */
  #unindexLive(session: BrowserSession): void {
    if (this.#byAuthSession.get(session.authSessionId) === session) {
      this.#byAuthSession.delete(session.authSessionId);
    }
    const mine = this.#byUser.get(session.userId);
    if (mine?.delete(session) && mine.size === 0) {
      this.#byUser.delete(session.userId);
    }
  }

  #forget(session: BrowserSession): void {
    this.#byId.delete(session.id);
    this.#unindexLive(session);
    session.dispose();
  }

  /** Every ended session goes now: a slot is worth more than a late tab hearing why. */
  #dropEnded(): void {
    for (const session of [...this.#byId.values()]) {
      if (!session.live) {
        this.#forget(session);
      }
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
