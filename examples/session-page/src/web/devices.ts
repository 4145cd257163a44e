// The device page: the list of the person's sessions, sign-out of one or of all the others
// (each confirmed), activity reporting, and the session-ended dialog fed by /api/events.

import {
  SESSION_ENDED_EVENT,
  type DeviceSession,
  type RevokedCount,
  type SessionEnded,
  type SessionList,
} from "../shared/api.js";
import { endReasonSentence } from "../shared/end_reasons.js";
import { reportActivity } from "./activity.js";
import { ApiError, call, fetchSession } from "./api.js";
import { openModal } from "./dialog.js";
import { addPasskey, passkeysSupported } from "./passkeys.js";
import { DEVICE_LABELS, icon } from "./icons.js";
import { timeAgo } from "./time.js";

/** How often "Last active …" is recomputed. */
const RELATIVE_TIME_REFRESH_MS = 30_000;

function element<T extends HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (found === null) {
    throw new Error(`the page lacks ${selector}`);
  }
  return found;
}

const list = element<HTMLUListElement>("[data-testid=session-list]");
const loading = element<HTMLElement>("[data-testid=loading]");
const empty = element<HTMLElement>("[data-testid=empty]");
const status = element<HTMLElement>("#status");
const revokeOthersButton = element<HTMLButtonElement>("#revoke-others");
const logoutButton = element<HTMLButtonElement>("#logout");
const addPasskeyButton = element<HTMLButtonElement>("#add-passkey");
const passkeyStatus = element<HTMLElement>("[data-testid=passkey-status]");
const confirmDialog = element<HTMLDialogElement>("[data-testid=confirm-dialog]");
const endedDialog = element<HTMLDialogElement>("[data-testid=session-ended-dialog]");

let ended: SessionEnded | undefined;
let stopReporting: () => void = () => undefined;
let events: EventSource | undefined;

function describeDevice(session: DeviceSession): string {
  const browser = session.browser || "Unknown browser";
  return session.os ? `${browser} on ${session.os}` : browser;
}

function lastActiveText(session: DeviceSession): string {
  return session.current ? "Active now" : `Last active ${timeAgo(new Date(session.lastActiveAt))}`;
}

function renderItem(session: DeviceSession): HTMLLIElement {
  const item = document.createElement("li");
  item.dataset["testid"] = "session-item";
  item.dataset["sessionId"] = session.id;
  item.dataset["deviceType"] = session.deviceType;
  item.className = "session";
  item.append(icon(session.deviceType, DEVICE_LABELS[session.deviceType]));

  const details = document.createElement("div");
  details.className = "details";
  const name = document.createElement("p");
  name.className = "device";
  name.id = `device-${session.id}`;
  name.textContent = describeDevice(session);
  if (session.current) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset["testid"] = "current-badge";
    badge.textContent = "This device";
    name.append(" ", badge);
  }
  if (session.twoFactor) {
    const badge = document.createElement("span");
    badge.className = "badge two-factor";
    badge.dataset["testid"] = "two-factor-badge";
    badge.title = "Signed in with two factors (AAL2)";
    badge.textContent = "Two-factor";
    name.append(" ", badge);
  }
  const where = document.createElement("p");
  where.className = "meta";
  where.textContent = [session.ipAddress, session.location].filter(Boolean).join(" · ") || "Unknown address";
  const when = document.createElement("p");
  when.className = "meta last-active";
  when.textContent = lastActiveText(session);
  details.append(name, where, when);
  item.append(details);

  if (!session.current) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = "Sign out";
    // Its name stays "Sign out"; screen readers also hear which device.
    button.setAttribute("aria-describedby", name.id);
    button.addEventListener("click", () => confirmSignOut(session, button));
    item.append(button);
  }
  return item;
}

let shown: DeviceSession[] = [];

function render(sessions: DeviceSession[]): void {
  shown = sessions;
  list.replaceChildren(...sessions.map(renderItem));
  const others = sessions.filter((s) => !s.current).length;
  empty.hidden = others > 0;
  revokeOthersButton.hidden = others === 0;
}

function refreshRelativeTimes(): void {
  for (const [index, item] of [...list.children].entries()) {
    const session = shown[index];
    const when = item.querySelector(".last-active");
    if (session !== undefined && when !== null) {
      when.textContent = lastActiveText(session);
    }
  }
}

function announce(message: string): void {
  status.textContent = message;
}

async function load(): Promise<void> {
  loading.hidden = false;
  list.setAttribute("aria-busy", "true");
  try {
    const answer = (await call("GET", "/api/sessions")) as SessionList;
    render(answer.sessions);
  } catch (error) {
    failed(error);
  } finally {
    loading.hidden = true;
    list.removeAttribute("aria-busy");
  }
}

/** An API call failed: the session may be over (the dialog says so), or say what went wrong. */
function failed(error: unknown): void {
  if (error instanceof ApiError && error.status === 401) {
    void confirmEnded();
    return;
  }
  announce(error instanceof Error ? error.message : "Something went wrong. Try again.");
}

/** Ask the BFF whether the session is still live; if not, show the dialog. */
async function confirmEnded(): Promise<void> {
  if (ended !== undefined) {
    return;
  }
  const state = await fetchSession().catch(() => undefined);
  if (state?.signedIn !== true) {
    sessionEnded({ reason: "UNSPECIFIED", message: endReasonSentence("UNSPECIFIED"), endedAt: new Date().toISOString() });
  }
}

function confirm(title: string, text: string, onConfirm: () => Promise<void>): void {
  element("#confirm-title").textContent = title;
  element("#confirm-text").textContent = text;
  const confirmButton = element<HTMLButtonElement>("[data-action=confirm]");
  const cancelButton = element<HTMLButtonElement>("[data-action=cancel]");
  const close = openModal(confirmDialog, {
    initialFocus: cancelButton,
    onClose: () => {
      confirmButton.onclick = null;
      cancelButton.onclick = null;
    },
  });
  cancelButton.onclick = close;
  confirmButton.onclick = () => {
    close();
    void onConfirm().catch(failed);
  };
}

function confirmSignOut(session: DeviceSession, button: HTMLButtonElement): void {
  const device = describeDevice(session);
  confirm("Sign out this device?", `${device} will be signed out and must sign in again.`, async () => {
    button.disabled = true;
    try {
      await call("DELETE", `/api/sessions/${encodeURIComponent(session.id)}`);
    } finally {
      button.disabled = false;
    }
    render(shown.filter((s) => s.id !== session.id));
    announce(`${device} was signed out.`);
    revokeOthersButton.focus();
    if (revokeOthersButton.hidden) {
      logoutButton.focus();
    }
  });
}

revokeOthersButton.addEventListener("click", () => {
  confirm("Sign out all other devices?", "Every device except this one will be signed out.", async () => {
    revokeOthersButton.disabled = true;
    try {
      const answer = (await call("POST", "/api/sessions/revoke-others")) as RevokedCount;
      announce(`${answer.revoked} other device${answer.revoked === 1 ? " was" : "s were"} signed out.`);
    } finally {
      revokeOthersButton.disabled = false;
    }
    await load();
    logoutButton.focus();
  });
});

// A new passkey ends the account's other sessions (authsvc: SECOND_FACTOR_CHANGED); the list
// is reloaded to show it.
addPasskeyButton.hidden = !passkeysSupported();
addPasskeyButton.addEventListener("click", () => {
  addPasskeyButton.disabled = true;
  passkeyStatus.textContent = "";
  addPasskey()
    .then(async (name) => {
      passkeyStatus.textContent = `Passkey added${name ? `: ${name}` : ""}. Other devices were signed out.`;
      await load();
    })
    .catch((caught: unknown) => {
      passkeyStatus.textContent =
        caught instanceof ApiError ? `No passkey was added. ${caught.answer.message}` : "No passkey was added.";
    })
    .finally(() => {
      addPasskeyButton.disabled = false;
    });
});

logoutButton.addEventListener("click", () => {
  stopListening();
  call("POST", "/api/logout")
    .catch(() => undefined)
    .finally(() => window.location.assign("/login"));
});

function stopListening(): void {
  stopReporting();
  events?.close();
}

/** The session is over: stop everything and show why, once. */
function sessionEnded(event: SessionEnded): void {
  if (ended !== undefined) {
    return;
  }
  ended = event;
  stopListening();
  element("[data-testid=end-reason]").textContent = event.message;
  const loginAgain = element<HTMLButtonElement>("[data-action=login-again]");
  const closeButton = element<HTMLButtonElement>("[data-action=close]");
  const close = openModal(endedDialog, {
    initialFocus: loginAgain,
    onClose: () => {
      document.body.classList.add("signed-out");
      element<HTMLElement>("#signed-out").hidden = false;
      element<HTMLAnchorElement>("#signed-out a").href = loginUrl(event.reason);
      list.replaceChildren();
      empty.hidden = true;
      revokeOthersButton.hidden = true;
      logoutButton.hidden = true;
      element<HTMLAnchorElement>("#signed-out a").focus();
    },
  });
  closeButton.onclick = close;
  loginAgain.onclick = () => window.location.assign(loginUrl(event.reason));
}

function loginUrl(reason: string): string {
  return `/login?expired=${encodeURIComponent(reason)}`;
}

function listen(): void {
  events = new EventSource("/api/events");
  events.addEventListener(SESSION_ENDED_EVENT, (message) => {
    sessionEnded(JSON.parse((message as MessageEvent<string>).data) as SessionEnded);
  });
  // A closed stream (not a passing drop, which reconnects by itself) means the BFF no
  // longer knows this browser: ask whether the session is still there.
  events.addEventListener("error", () => {
    if (events?.readyState === EventSource.CLOSED) {
      void confirmEnded();
    }
  });
}

async function start(): Promise<void> {
  const state = await fetchSession();
  if (!state.signedIn) {
    window.location.replace("/login");
    return;
  }
  listen();
  stopReporting = reportActivity(state.activityIntervalMs, failed);
  setInterval(refreshRelativeTimes, RELATIVE_TIME_REFRESH_MS);
  await load();
}

void start().catch(failed);
