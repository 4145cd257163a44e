"""Input rules for the fields users type. Each failure names its field."""

from __future__ import annotations

import re
import unicodedata

import idna
from confusable_homoglyphs import categories

from authsvc.core.errors import InvalidArgument, WeakPassword

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "canonical_email",
    "check_new_password",
    "check_password_given",
    "clean_label",
    "normalize_email",
]

MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit
MAX_PASSWORD_LENGTH = 256
MAX_LABEL_LENGTH = 100
# Deliberately loose: one @, something on each side, a dot in the domain, no
# spaces. Deliverability is the business of a verification email, not a regex.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _has_control_characters(value: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value)


def normalize_email(email: str) -> str:
    """The one canonical form of an email, so that addresses that look the same are one
    account: the local part in NFKC and case-folded, the domain in IDNA (UTS 46) ASCII form,
    without the root's trailing dot.

    A local part that mixes scripts (Latin with Cyrillic, say) is refused, because it can pass
    for another account's address; docs/accounts.md gives the rule.
    """
    email = email.strip()
    if not email:
        raise InvalidArgument("email", "email is required")
    # NFKC may lengthen or shorten; this bound only keeps the work on huge input small.
    if len(email) > 4 * MAX_EMAIL_LENGTH:
        raise InvalidArgument("email", f"email is longer than {MAX_EMAIL_LENGTH} characters")
    normalized = _nfkc_casefold(email)
    if not _EMAIL.fullmatch(normalized) or _has_control_characters(normalized):
        raise InvalidArgument("email", "email is not a valid address")
    local, _, domain = normalized.rpartition("@")
    # "example.com." names the same domain as "example.com" (the root's empty label).
    if domain.endswith(".") and not domain.endswith(".."):
        domain = domain[:-1]
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidArgument("email", "email domain is not a valid domain name") from exc
    if _is_mixed_script(local):
        raise InvalidArgument("email", "email mixes letters of different scripts")
    normalized = f"{local}@{domain}"
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise InvalidArgument("email", f"email is longer than {MAX_EMAIL_LENGTH} characters")
    return normalized


def canonical_email(email: str) -> str | None:
    """The canonical form of a stored email, or None if it has none (for migration 0012)."""
    try:
        return normalize_email(email)
    except InvalidArgument:
        return None


def _nfkc_casefold(value: str) -> str:
    # Case folding can undo NFKC (e.g. U+0345), so normalise again after it (NFKC_Casefold).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())


# Scripts that carry no letters of their own (digits, punctuation, combining marks).
_NEUTRAL_SCRIPTS = frozenset({"COMMON", "INHERITED"})
# UTS 39 "highly restrictive": one script, or Latin with the scripts written together in
# Japanese, Chinese or Korean, none of which look like Latin letters.
_ALLOWED_SCRIPT_MIXES = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


def _is_mixed_script(value: str) -> bool:
    scripts = {categories.alias(ch) for ch in value} - _NEUTRAL_SCRIPTS
    return len(scripts) > 1 and not any(scripts <= mix for mix in _ALLOWED_SCRIPT_MIXES)


def check_password_given(password: str, *, field: str = "password") -> None:
    """Login only checks presence and size: the policy may have changed since signup.
    `field` names the request field in the error (`new_password`, say)."""
    if not password:
        raise InvalidArgument(field, f"{field} is required")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(field, f"{field} is longer than {MAX_PASSWORD_LENGTH} characters")


def check_new_password(
    password: str, *, min_length: int, email: str, field: str = "password"
) -> None:
    check_password_given(password, field=field)
    if len(password) < min_length:
        raise WeakPassword(field, f"{field} must have at least {min_length} characters")
    if password.strip().lower() == email:
        raise WeakPassword(field, f"{field} must not be the email address")
    if len(set(password)) == 1 or not password.strip():
        # NIST 800-63B: no composition rules, but refuse the trivially guessable.
        raise WeakPassword(field, f"{field} must not be blank or one character repeated")


def clean_label(field: str, value: str, *, max_length: int) -> str:
    """A short free-text label (display name, device name, revoke note)."""
    value = value.strip()
    if len(value) > max_length:
        raise InvalidArgument(field, f"{field} is longer than {max_length} characters")
    if _has_control_characters(value):
        raise InvalidArgument(field, f"{field} contains control characters")
    return value
