"""Passkeys (WebAuthn credentials) and their challenges, as the domain and store share them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from authsvc.core.models import UserId

__all__ = ["Challenge", "ChallengePurpose", "NewPasskey", "StoredPasskey"]


class ChallengePurpose:
    REGISTRATION = "registration"
    ASSERTION = "assertion"


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """A ceremony begun, as stored: never the challenge itself, only its SHA-256."""

    id: uuid.UUID
    # None: a PasskeyLogin challenge, answerable by any user's discoverable passkey.
    user_id: UserId | None
    purpose: str
    # The pending login's or session's id it was issued for; None for PasskeyLogin.
    binding: uuid.UUID | None
    challenge_hash: bytes
    created_at: datetime
    expires_at: datetime
    # The label a registration gives its passkey.
    name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredPasskey:
    id: uuid.UUID
    user_id: UserId
    name: str
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewPasskey:
    id: uuid.UUID
    user_id: UserId
    name: str
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]
    created_at: datetime
