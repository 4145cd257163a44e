// Modal dialogs on the native <dialog>: showModal() makes the rest of the page inert; on top
// of that focus is kept inside explicitly (Tab and Shift+Tab wrap around), Escape closes, and
// focus returns to where it was.

const FOCUSABLE = "button:not([disabled]), [href], input:not([disabled]), select, textarea, [tabindex]:not([tabindex='-1'])";

export interface ModalOptions {
  /** Focused when the dialog opens; default its first focusable element. */
  initialFocus?: HTMLElement;
  /** Runs once when the dialog closes, however it closes (a button, Escape). */
  onClose?: () => void;
}

/** Open `dialog` modally; returns a function that closes it. */
export function openModal(dialog: HTMLDialogElement, options: ModalOptions = {}): () => void {
  const opener = document.activeElement instanceof HTMLElement ? document.activeElement : undefined;
  const focusable = () => [...dialog.querySelectorAll<HTMLElement>(FOCUSABLE)];
  const onKey = (event: KeyboardEvent) => {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
      return;
    }
    if (event.key !== "Tab") {
      return;
    }
    const items = focusable();
    const first = items[0];
    const last = items[items.length - 1];
    if (first === undefined || last === undefined) {
      event.preventDefault();
      return;
    }
    const active = document.activeElement;
    if (event.shiftKey && (active === first || !dialog.contains(active))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && (active === last || !dialog.contains(active))) {
      event.preventDefault();
      first.focus();
    }
  };
  // The browser's own Escape handling (the cancel event) goes through close() too.
  const onCancel = (event: Event) => {
    event.preventDefault();
    close();
  };
  let open = true;
  const close = () => {
    if (!open) {
      return;
    }
    open = false;
    dialog.removeEventListener("keydown", onKey);
    dialog.removeEventListener("cancel", onCancel);
    dialog.close();
    if (opener?.isConnected) {
      opener.focus();
    }
    options.onClose?.();
  };
  dialog.addEventListener("keydown", onKey);
  dialog.addEventListener("cancel", onCancel);
  dialog.showModal();
  (options.initialFocus ?? focusable()[0])?.focus();
  return close;
}
