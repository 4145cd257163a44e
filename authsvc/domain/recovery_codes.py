"""Recovery codes: a user's way back in when their other factors are lost.

A set is COUNT codes of 80 random bits each, shown once as 16 base32 characters in groups
of four (`abcd-efgh-ijkl-mnop`) and stored only as the SHA-256 of their normalised form:
80 bits are beyond guessing, so a fast hash is enough (as for refresh tokens). Each code
works once (the store's UPDATE ... WHERE used_at IS NULL decides).
"""

from __future__ import annotations

import base64
import hashlib
import secrets

__all__ = ["CODE_BITS", "COUNT", "code_hash", "new_codes", "normalise"]

COUNT = 10
CODE_BITS = 80
_GROUP = 4
_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
# 80 bits are exactly 16 base32 characters: no padding.
_CHARS = CODE_BITS // 5
# What a user may type around a code's characters; case is ignored too.
_SEPARATORS = str.maketrans("", "", "- \t")


def new_codes() -> list[str]:
    """A new set, as shown to the user: COUNT distinct codes."""
    codes: set[str] = set()
    while len(codes) < COUNT:
        raw = base64.b32encode(secrets.token_bytes(CODE_BITS // 8)).decode().lower()
        codes.add("-".join(raw[i : i + _GROUP] for i in range(0, _CHARS, _GROUP)))
    return sorted(codes)


def normalise(code: str) -> str | None:
    """The code as stored (lower case, no dashes or spaces), or None if it cannot be one."""
    plain = code.translate(_SEPARATORS).lower()
    if len(plain) != _CHARS or not set(plain) <= _ALPHABET:
        return None
    return plain


def code_hash(normalised: str) -> bytes:
    """What the database keeps of a code: SHA-256 of its normalised form."""
    return hashlib.sha256(normalised.encode()).digest()
