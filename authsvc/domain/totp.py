"""Time-based one-time passwords (RFC 6238) on pyotp: 6 digits, 30-second steps, SHA-1,
which is what every authenticator app reads from an otpauth:// URI.

Verification answers with the time step the code matched, so the store can refuse a
step at or below the last one it accepted: a code works once, and neither it nor an
older one is accepted again (docs/second-factors.md, "TOTP and recovery codes").
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime
from urllib.parse import urlencode

import pyotp

__all__ = [
    "DIGITS",
    "SKEW_STEPS",
    "STEP_SECONDS",
    "is_code_shaped",
    "matching_step",
    "new_secret",
    "provisioning_uri",
]

DIGITS = 6
STEP_SECONDS = 30
# Steps accepted either side of the server's: a phone's clock a little off, or a code
# typed as it rolled over. Wider windows give a guesser more codes per try.
SKEW_STEPS = 1
# pyotp's random_base32 length for 160 bits, RFC 4226's recommended secret size.
_SECRET_CHARS = 32
_PARAMETERS = {"algorithm": "SHA1", "digits": DIGITS, "period": STEP_SECONDS}
_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")


def new_secret() -> str:
    """A new shared secret: 160 random bits in base32 (pyotp uses the system's CSPRNG)."""
    return pyotp.random_base32(_SECRET_CHARS)


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    """The otpauth://totp/ URI an app reads from a QR code: issuer, account, secret,
    algorithm, digits and period."""
    uri = _totp(secret).provisioning_uri(name=account, issuer_name=issuer)
    # pyotp leaves out parameters at their defaults; some apps guess otherwise: say them.
    return f"{uri}&{urlencode(_PARAMETERS)}"


def is_code_shaped(code: str) -> bool:
    """Exactly six ASCII digits."""
    return _CODE.fullmatch(code) is not None


def matching_step(secret: str, code: str, *, at: datetime, skew: int = SKEW_STEPS) -> int | None:
    """The time step within `skew` steps of `at` whose code `code` is, or None. Every
    candidate is compared, each in constant time, so the answer's timing says nothing
    about which step (if any) matched."""
    if not is_code_shaped(code):
        return None
    totp = _totp(secret)
    current = totp.timecode(at)
    matched = None
    for step in range(current - skew, current + skew + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), code.encode()):
            matched = step
    return matched


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
