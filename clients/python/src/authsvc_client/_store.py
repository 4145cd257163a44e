"""Where a TokenManager keeps its token pair between calls and, for CLIs, between runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from authsvc_client._models import TokenPair

__all__ = ["FileTokenStore", "InMemoryTokenStore", "TokenStore"]

_log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


class TokenStore(Protocol):
    """Persistence for one session's token pair.

    The manager loads once, then saves after every refresh and clears when the session ends,
    so a store only has to remember the last pair it was given.
    """

    async def load(self) -> TokenPair | None: ...

    async def save(self, pair: TokenPair) -> None: ...

    async def clear(self) -> None: ...


class InMemoryTokenStore:
    """Keeps the pair in this process only (the default)."""

    __slots__ = ("_pair",)

    def __init__(self, pair: TokenPair | None = None) -> None:
        self._pair = pair

    async def load(self) -> TokenPair | None:
        return self._pair

    async def save(self, pair: TokenPair) -> None:
        self._pair = pair

    async def clear(self) -> None:
        self._pair = None


def _encode(pair: TokenPair) -> str:
    return json.dumps(
        {
            "version": _FORMAT_VERSION,
            "access_token": pair.access_token,
            "access_token_expires_at": pair.access_token_expires_at.isoformat(),
            "refresh_token": pair.refresh_token,
            "refresh_token_expires_at": pair.refresh_token_expires_at.isoformat(),
            "session_id": str(pair.session_id),
            "user_id": str(pair.user_id),
            "token_type": pair.token_type,
        },
        indent=2,
    )


def _decode(text: str) -> TokenPair:
    data: dict[str, Any] = json.loads(text)
    if data.get("version") != _FORMAT_VERSION:
        raise ValueError(f"unknown token file version {data.get('version')!r}")
    return TokenPair(
        access_token=str(data["access_token"]),
        access_token_expires_at=datetime.fromisoformat(data["access_token_expires_at"]),
        refresh_token=str(data["refresh_token"]),
        refresh_token_expires_at=datetime.fromisoformat(data["refresh_token_expires_at"]),
        session_id=uuid.UUID(data["session_id"]),
        user_id=uuid.UUID(data["user_id"]),
        token_type=str(data.get("token_type", "Bearer")),
    )


class FileTokenStore:
    """A JSON file readable only by its owner (0600), for CLIs that stay signed in across runs.

    Saves are atomic: the pair is written to a temporary file in the same directory, synced,
    then renamed over the old one, so a crash leaves the old pair or the new one, never half.
    A missing or unreadable file loads as "not signed in". File I/O runs off the event loop.
    """

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    @property
    def path(self) -> Path:
        return self._path

    async def load(self) -> TokenPair | None:
        return await asyncio.to_thread(self._load)

    async def save(self, pair: TokenPair) -> None:
        await asyncio.to_thread(self._save, pair)

    async def clear(self) -> None:
        await asyncio.to_thread(self._path.unlink, missing_ok=True)

    def _load(self) -> TokenPair | None:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return _decode(text)
        except (ValueError, KeyError, TypeError) as exc:
            _log.warning(
                "ignoring unreadable token file %s: %s",
                self._path,
                type(exc).__name__,
                extra={"event": "token_file_unreadable"},
            )
            return None

    def _save(self, pair: TokenPair) -> None:
        directory = self._path.parent
        directory.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file owner-only before anything secret is written to it; the
        # rename then gives the final path those permissions, whatever the old file had.
        fd, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{self._path.name}.", suffix=".tmp"
        )
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(_encode(pair))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    """Make the rename durable; some platforms cannot open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
