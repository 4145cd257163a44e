"""Input rules for the fields users type. Each failure names its field."""

from __future__ import annotations

import re
import unicodedata

from authsvc.core.errors import InvalidArgument, WeakPassword

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_PASSWORD_LENGTH",
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
    """Trim and lower-case: accounts are unique ignoring case."""
    normalized = email.strip().lower()
    if not normalized:
        raise InvalidArgument("email", "email is required")
    if len(normalized) > MAX_EMAIL_LENGTH:
        raise InvalidArgument("email", f"email is longer than {MAX_EMAIL_LENGTH} characters")
    if not _EMAIL.fullmatch(normalized) or _has_control_characters(normalized):
        raise InvalidArgument("email", "email is not a valid address")
    return normalized


def check_password_given(password: str) -> None:
    """Login only checks presence and size: the policy may have changed since signup."""
    if not password:
        raise InvalidArgument("password", "password is required")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument(
            "password", f"password is longer than {MAX_PASSWORD_LENGTH} characters"
        )


def check_new_password(password: str, *, min_length: int, email: str) -> None:
    check_password_given(password)
    if len(password) < min_length:
        raise WeakPassword("password", f"password must have at least {min_length} characters")
    if password.strip().lower() == email:
        raise WeakPassword("password", "password must not be the email address")
    if len(set(password)) == 1 or not password.strip():
        # NIST 800-63B: no composition rules, but refuse the trivially guessable.
        raise WeakPassword("password", "password must not be blank or one character repeated")


def clean_label(field: str, value: str, *, max_length: int) -> str:
    """A short free-text label (display name, device name, revoke note)."""
    value = value.strip()
    if len(value) > max_length:
        raise InvalidArgument(field, f"{field} is longer than {max_length} characters")
    if _has_control_characters(value):
        raise InvalidArgument(field, f"{field} contains control characters")
    return value
