"""Service keys: the static credentials internal services send as `authorization: Bearer <key>`.

A key is `authsvc_sk_`, 43 random base62 characters (256 bits) and 6 base62 characters of
their CRC-32, shaped like GitHub's tokens: the prefix lets secret scanners find a leaked key,
the checksum lets them tell a key from a look-alike without asking us. The server is
configured with entries `NAME:sha256:HEX`, never the keys: a key has 256 bits of entropy,
so nobody can search for one from its SHA-256, and a slow password hash (argon2) would only
make every service call expensive (docs/threat-model.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

__all__ = [
    "KEY_PREFIX",
    "ServiceKeyEntry",
    "ServiceKeys",
    "mint_service_key",
    "parse_service_keys",
]

KEY_PREFIX = "authsvc_sk_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_CHARS = 43  # 43 x log2(62) = 256.03 bits
_CHECKSUM_CHARS = 6  # 62**6 > 2**32: any CRC-32 fits
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENTRY = re.compile(r"(?P<name>[^:]+):sha256:(?P<digest>[0-9a-f]{64})")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class ServiceKeyEntry:
    """One accepted key: the service's name and the key's SHA-256."""

    name: str
    digest: bytes

    def __str__(self) -> str:
        """The entry as AUTHSVC_SERVICE_KEYS takes it."""
        return f"{self.name}:sha256:{self.digest.hex()}"

    def __repr__(self) -> str:
        return f"ServiceKeyEntry(name={self.name!r})"


@dataclass(frozen=True, slots=True)
class ServiceKeys:
    """The accepted keys. Several may share a name: the old and new key of a rotation."""

    entries: tuple[ServiceKeyEntry, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(entry.name for entry in self.entries))

    def identify(self, key: str) -> str | None:
        """The name of the service whose key this is, or None. Any string may come in: an
        unknown, a malformed and a look-alike key cost the same one hash and compare."""
        digest = _digest(key)
        found = None
        # Every entry, with no early exit: the time taken does not say which one matched.
        for entry in self.entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.name
        return found

    def __repr__(self) -> str:
        return f"ServiceKeys(names={list(self.names)!r})"


def mint_service_key(name: str) -> tuple[str, str]:
    """A new key for the service `name` and its AUTHSVC_SERVICE_KEYS entry. The key is shown
    once: only the entry's hash is kept."""
    if _NAME.fullmatch(name) is None:
        raise ValueError(
            "a service name is 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    key = KEY_PREFIX + body + _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)
    return key, str(ServiceKeyEntry(name, _digest(key)))


def parse_service_keys(text: str) -> ServiceKeys:
    """`NAME:sha256:HEX` entries, separated by commas or whitespace (empty: none)."""
    entries: list[ServiceKeyEntry] = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        # Never repeat the text in a message: it may be a key pasted by mistake.
        if item.startswith(KEY_PREFIX):
            raise ValueError(
                "holds a service key itself; give its entry (NAME:sha256:HEX, printed by "
                "`authsvc service-key create`) and keep the key out of the configuration"
            )
        match = _ENTRY.fullmatch(item)
        if match is None or _NAME.fullmatch(match["name"]) is None:
            raise ValueError(
                f"entry {len(entries) + 1} is not NAME:sha256:HEX (64 lowercase hex digits), "
                "as `authsvc service-key create NAME` prints it"
            )
        entry = ServiceKeyEntry(match["name"], bytes.fromhex(match["digest"]))
        if entry.digest in (known.digest for known in entries):
            raise ValueError(f"the key of entry {len(entries) + 1} ({entry.name}) appears twice")
        entries.append(entry)
    return ServiceKeys(tuple(entries))
