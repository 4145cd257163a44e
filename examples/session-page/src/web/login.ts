// The login page: the form, its errors (wrong password, throttled), and the notice of why
// the previous session ended (`?expired=REASON`, from the session-ended dialog).

import { endReasonSentence } from "../shared/end_reasons.js";
import { ApiError, call, fetchSession } from "./api.js";
import { passkeysSupported, signInWithPasskey } from "./passkeys.js";

function element<T extends HTMLElement>(selector: string): T {
  const found = document.querySelector<T>(selector);
  if (found === null) {
    throw new Error(`the page lacks ${selector}`);
  }
  return found;
}

const form = element<HTMLFormElement>("[data-testid=login-form]");
const email = element<HTMLInputElement>("#email");
const password = element<HTMLInputElement>("#password");
const submit = element<HTMLButtonElement>("#sign-in");
const error = element<HTMLElement>("[data-testid=login-error]");
const notice = element<HTMLElement>("[data-testid=expired-notice]");
const passkeyButton = element<HTMLButtonElement>("#passkey-sign-in");

const expired = new URLSearchParams(window.location.search).get("expired");
if (expired !== null) {
  notice.textContent = `Your session ended: ${endReasonSentence(expired)}`;
  notice.hidden = false;
}

// The login POST carries a CSRF token too, scoped to this browser's pre-session.
const ready = fetchSession().catch(() => undefined);

/** The refusals that are about what was typed; a busy or throttled server's are not. */
const INPUT_ERRORS: ReadonlySet<string> = new Set(["INVALID_CREDENTIALS", "INVALID_FIELD"]);

function showError(message: string, aboutInput: boolean): void {
  error.textContent = message;
  error.hidden = false;
  for (const input of [email, password]) {
    input.setAttribute("aria-describedby", error.id);
    if (aboutInput) {
      input.setAttribute("aria-invalid", "true");
    }
  }
}

function clearError(): void {
  error.hidden = true;
  error.textContent = "";
  for (const input of [email, password]) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

async function signIn(): Promise<void> {
  await ready;
  const body = { email: email.value.trim(), password: password.value };
  try {
    await call("POST", "/api/login", body);
  } catch (caught) {
    if (caught instanceof ApiError && caught.answer.error === "CSRF_CHECK_FAILED") {
      await fetchSession(); // the pre-session lapsed: one more try with a fresh token
      await call("POST", "/api/login", body);
    } else {
      throw caught;
    }
  }
  window.location.assign("/");
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  clearError();
  submit.disabled = true;
  form.setAttribute("aria-busy", "true");
  signIn()
    .catch((caught: unknown) => {
      const aboutInput = caught instanceof ApiError && INPUT_ERRORS.has(caught.answer.error);
      showError(caught instanceof ApiError ? caught.answer.message : "Something went wrong. Try again.", aboutInput);
      if (aboutInput) {
        password.select();
      }
      password.focus();
    })
    .finally(() => {
      submit.disabled = false;
      form.removeAttribute("aria-busy");
    });
});

// A passkey alone signs in (authsvc's PasskeyLogin): the browser offers this site's passkeys.
passkeyButton.hidden = !passkeysSupported();
passkeyButton.addEventListener("click", () => {
  clearError();
  passkeyButton.disabled = true;
  ready
    .then(() => signInWithPasskey())
    .then(() => window.location.assign("/"))
    .catch((caught: unknown) => {
      showError(caught instanceof ApiError ? caught.answer.message : "Something went wrong. Try again.", false);
      passkeyButton.focus();
    })
    .finally(() => {
      passkeyButton.disabled = false;
    });
});
