"""A user's second factors as stored: what the factor store returns and the domain reads."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from authsvc.core.factors import FactorKind
from authsvc.core.models import EndedSession, SealedSecret, UserId

__all__ = ["Factor", "FactorChange", "FactorList", "StoredTotp"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Factor:
    """A confirmed factor, as listed: never a secret."""

    id: uuid.UUID
    user_id: UserId
    kind: FactorKind
    name: str
    # When its enrolment was confirmed.
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FactorList:
    """A user's confirmed factors, oldest first, and their unused recovery codes."""

    factors: tuple[Factor, ...]
    recovery_codes_remaining: int
    # The store's answer: an operator's mark on the account (users.second_factor_required);
    # FactorService's: the mark or the server's policy.
    second_factor_required: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTotp:
    """A TOTP row: its sealed secret, and the last time step it accepted (None: none yet)."""

    id: uuid.UUID
    user_id: UserId
    name: str
    sealed_secret: SealedSecret
    last_step: int | None
    # None while an enrolment awaits its confirmation.
    confirmed_at: datetime | None
    enrolment_expires_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FactorChange:
    """What a committed change to a user's factors did: the factor it was about (None for
    a regeneration), the recovery codes it issued, and the sessions it ended."""

    factor: Factor | None
    # True when the change issued a new set of recovery codes (a first factor's).
    issued_codes: bool
    ended: list[EndedSession]
