"""The webhook settings' values: endpoint URLs, and secrets in Standard Webhooks' `whsec_`
form. Parsed here, declared in config.py."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "WebhookSecrets",
    "parse_webhook_secrets",
    "parse_webhook_secrets_file",
    "parse_webhook_urls",
]

_PREFIX = "whsec_"
# Standard Webhooks: secrets of 24 to 64 bytes.
_MIN_BYTES, _MAX_BYTES = 24, 64


def parse_webhook_urls(text: str) -> tuple[str, ...]:
    """Comma-separated absolute http(s) URLs with a host, without credentials or a
    fragment. Only an operator sets them: nothing a caller sends chooses where events go."""
    urls: list[str] = []
    for part in text.split(","):
        url = part.strip()
        if not url:
            continue
        parts = urllib.parse.urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.fragment
            or re.search(r"\s", url)
        ):
            # Not repeated: a URL may hold a credential in its query.
            raise ValueError(
                f"entry {len(urls) + 1} is not an http(s) URL with a host and no user, "
                "password or fragment, like https://hooks.example.com/authsvc"
            )
        if url in urls:
            raise ValueError(f"entry {len(urls) + 1} repeats an earlier URL")
        urls.append(url)
    return tuple(urls)


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    """The signing secrets, the first the one a receiver is given first; each delivery is
    signed with all, so a receiver can move to a new secret without a gap. Never prints."""

    keys: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"WebhookSecrets(count={len(self.keys)}, keys='***')"


def parse_webhook_secrets(text: str) -> WebhookSecrets:
    """`whsec_<base64>` secrets, separated by commas or whitespace."""
    keys: list[bytes] = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        encoded = entry.removeprefix(_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True) if encoded != entry else b""
        except binascii.Error:
            key = b""
        if not _MIN_BYTES <= len(key) <= _MAX_BYTES:
            # The secret itself is not repeated: the message goes to logs.
            raise ValueError(
                f"secret {len(keys) + 1} is not whsec_ and {_MIN_BYTES} to {_MAX_BYTES} bytes "
                'in base64, e.g. "whsec_$(openssl rand -base64 32)"'
            )
        keys.append(key)
    if not keys:
        raise ValueError("no secret given")
    return WebhookSecrets(tuple(keys))


def parse_webhook_secrets_file(text: str) -> WebhookSecrets:
    """A file holding what `parse_webhook_secrets` takes."""
    try:
        contents = Path(text).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {text!r}: {exc.strerror}") from exc
    try:
        return parse_webhook_secrets(contents)
    except ValueError as exc:
        raise ValueError(f"{text}: {exc}") from exc
