"""Frozen domain values passed between the store, the domain and the API edge."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, NewType, TypeAlias

from authsvc.core.factors import Assurance, FactorKind

__all__ = [
    "EXPIRED_SESSIONS",
    "SYSTEM",
    "TIMEOUTS",
    "Account",
    "AuditEvent",
    "AuditFilter",
    "AuditPage",
    "AuditRecord",
    "BucketCount",
    "DeviceInfo",
    "DeviceType",
    "EndedSession",
    "ExpiredSession",
    "IssuedTokens",
    "ListedSession",
    "Location",
    "LogoutScope",
    "Operator",
    "PlaintextPrivateKey",
    "Principal",
    "RefreshTokenRecord",
    "RequestOrigin",
    "ResetTarget",
    "Revocation",
    "RevocationLogBounds",
    "SealedPrivateKey",
    "SealedSecret",
    "Session",
    "SessionEnd",
    "SessionEndReason",
    "SessionEnder",
    "SessionEnderKind",
    "SessionId",
    "SessionPage",
    "SigningKey",
    "SweepBatch",
    "SweepCounts",
    "SweepCutoffs",
    "User",
    "UserId",
]

UserId = NewType("UserId", uuid.UUID)
SessionId = NewType("SessionId", uuid.UUID)


class DeviceType(enum.Enum):
    UNKNOWN = "unknown"
    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"
    BOT = "bot"
    OTHER = "other"


class LogoutScope(enum.Enum):
    THIS_SESSION = "this_session"
    OTHER_SESSIONS = "other_sessions"
    ALL_SESSIONS = "all_sessions"


class SessionEndReason(enum.Enum):
    """Why a session ended; each ending writes one (migrations 0014, 0015, 0018, 0029 list
    them)."""

    USER_LOGOUT = "user_logout"
    USER_REVOKED = "user_revoked"
    REFRESH_TOKEN_REUSE = "refresh_token_reuse"  # noqa: S105 (a reason, not a secret)
    ADMIN_REVOKED = "admin_revoked"
    USER_DISABLED = "user_disabled"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    PASSWORD_RESET = "password_reset"  # noqa: S105
    USER_DELETED = "user_deleted"
    IDLE_TIMEOUT = "idle_timeout"
    ABSOLUTE_TIMEOUT = "absolute_timeout"
    BULK_REVOKED = "bulk_revoked"
    SESSION_LIMIT_EVICTED = "session_limit_evicted"
    SECOND_FACTOR_CHANGED = "second_factor_changed"


# The endings the sweeper marks: a session's deadline passed, nobody ended it.
TIMEOUTS = frozenset({SessionEndReason.IDLE_TIMEOUT, SessionEndReason.ABSOLUTE_TIMEOUT})


class SessionEnderKind(enum.Enum):
    """Who ended a session (migration 0018's ended_by_kind)."""

    USER = "user"
    OPERATOR = "operator"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnder:
    """Who ended a session: the user (from the session of the call, None when the call had
    none, as ResetPassword), an operator (its credential's name), or the system."""

    kind: SessionEnderKind
    session_id: SessionId | None = None
    operator: str = ""

    @classmethod
    def user(cls, session_id: SessionId | None) -> SessionEnder:
        return cls(kind=SessionEnderKind.USER, session_id=session_id)

    @classmethod
    def by_operator(cls, name: str) -> SessionEnder:
        return cls(kind=SessionEnderKind.OPERATOR, operator=name)


SYSTEM = SessionEnder(kind=SessionEnderKind.SYSTEM)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnd:
    """How a session ended: when, why and by whom. `reason` is None on sessions ended
    before reasons were recorded (migration 0014), `ended_by` before enders were (0018)."""

    ended_at: datetime
    reason: SessionEndReason | None
    ended_by: SessionEnder | None


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    id: UserId
    email: str
    display_name: str
    password_hash: str
    created_at: datetime
    # When an operator disabled the account; None while it is enabled.
    disabled_at: datetime | None = None
    # An operator marked it as one that must have a second factor.
    second_factor_required: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What a login tells us about the device it came from."""

    user_agent: str
    ip_address: str
    device_type: DeviceType
    browser: str
    os: str
    device_name: str
    # Where ip_address is, when a GeoIP database is configured (see Location).
    country: str = ""
    city: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """Where an address is: its ISO 3166-1 alpha-2 country ("DE") and its city in English.
    Each is empty when unknown."""

    country: str = ""
    city: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOrigin:
    """Where a request came from, for the audit trail."""

    ip_address: str = ""
    user_agent: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    """Who made an AdminService call: the name of an operator's service credential."""

    name: str
    # How the credential came: "service_key" or "client_certificate".
    via: str
    origin: RequestOrigin

    @property
    def audit_detail(self) -> dict[str, object]:
        """What every admin audit event's detail carries about its operator."""
        return {"operator": self.name, "via": self.via}


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One security event. `event` is a stable snake_case name (login_failed, ...)."""

    event: str
    occurred_at: datetime
    user_id: UserId | None = None
    session_id: SessionId | None = None
    origin: RequestOrigin = RequestOrigin()
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """An audit event as stored, with its id (ids grow with time)."""

    id: int
    event: AuditEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """Which audit events to list; each field given narrows it (AND)."""

    user_id: UserId | None = None
    # Empty: every type.
    event_types: tuple[str, ...] = ()
    occurred_after: datetime | None = None  # inclusive
    occurred_before: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPage:
    events: list[AuditRecord]
    # The last event's id when another page follows.
    next_cursor: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """An account as operators see it: never its password hash."""

    id: UserId
    email: str
    display_name: str
    created_at: datetime
    updated_at: datetime
    # None while enabled.
    disabled_at: datetime | None
    disabled_reason: str
    live_session_count: int
    # An operator marked it as one that must have a second factor (SetSecondFactorRequired).
    second_factor_required: bool = False
    # The kinds of its confirmed second factors, one per factor, oldest first.
    factor_kinds: tuple[FactorKind, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetTarget:
    """The account a password reset is for, as far as a reset needs it."""

    user_id: UserId
    email: str
    disabled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    id: SessionId
    user_id: UserId
    created_at: datetime
    last_active_at: datetime
    # Always <= expires_at: the idle deadline slides forward but is capped.
    idle_expires_at: datetime
    expires_at: datetime
    remember_me: bool
    device: DeviceInfo
    revoked_at: datetime | None
    revoke_reason: str | None
    # Set with revoked_at by the statement that ended it (None while live; see SessionEnd).
    end_reason: SessionEndReason | None = None
    ended_by: SessionEnder | None = None
    # How its user proved who they are; None: a password, at its creation.
    assurance: Assurance | None = None

    @property
    def proven(self) -> Assurance:
        """Its assurance, a password at its creation when none was recorded."""
        return self.assurance or Assurance.password_at(self.created_at)

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.idle_expires_at


class ListedSession(NamedTuple):
    """A live session as ListSessions shows it: what the answer needs, no more.

    A NamedTuple, not a frozen dataclass like the other values: a page builds up to a
    thousand, and a frozen dataclass's `__init__` (one `object.__setattr__` a field)
    costs four times as much.
    """

    id: SessionId
    created_at: datetime
    last_active_at: datetime
    idle_expires_at: datetime
    expires_at: datetime
    remember_me: bool
    user_agent: str
    ip_address: str
    device_type: DeviceType
    browser: str
    os: str
    device_name: str
    country: str
    city: str
    assurance: Assurance


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    """One entry of the revocation log: a session ended, at its place (`cursor`) in the
    log. Cursors only grow, in the order the endings committed."""

    cursor: int
    session_id: SessionId
    user_id: UserId
    reason: SessionEndReason
    revoked_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationLogBounds:
    """The revocation log's extent."""

    # The newest committed entry's cursor (0 while the log has never had one).
    latest: int
    # Entries with a cursor at or below this may have been swept: a reader whose cursor
    # is below it cannot tell what it missed (cursors have gaps, so a missing row is
    # no proof). 0 until the first sweep.
    swept_through: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshTokenRecord:
    """A stored refresh token: only its SHA-256 is kept, never the token."""

    id: uuid.UUID
    session_id: SessionId
    token_hash: bytes
    created_at: datetime
    expires_at: datetime
    rotated_at: datetime | None
    # The successor token, encrypted under a key derived from this token's
    # plaintext, so only a holder of this token can recover it in the grace window.
    successor_box: bytes | None
    # For a rotation made with an idempotency key: the key's hash (see
    # domain/idempotent_refresh.py); None otherwise.
    idempotency_key_hash: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndedSession:
    """A session a call has just ended: its id, and its start for the duration metric."""

    id: SessionId
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpiredSession:
    """A session the sweeper marked ended because it passed a deadline unended."""

    created_at: datetime
    idle_expires_at: datetime
    expires_at: datetime

    @property
    def reached_lifetime(self) -> bool:
        """Whether its absolute deadline ended it (the idle one is capped by it)."""
        return self.idle_expires_at >= self.expires_at


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationAttempt:
    """What the one-statement rotation found for a presented refresh token.

    `idle_expires_at` is set only when it rotated: the token was current and its
    session live. Otherwise nothing was written and the caller decides why.
    """

    session_id: SessionId
    user_id: UserId
    idle_expires_at: datetime | None
    # The session's level and methods, which the successor's access token carries.
    assurance: Assurance


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedTokens:
    """A fresh token pair, returned once to the caller and never stored."""

    user_id: UserId
    session_id: SessionId
    access_token: str
    access_token_expires_at: datetime
    refresh_token: str
    refresh_token_expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a verified access token speaks for."""

    user_id: UserId
    session_id: SessionId
    issued_at: datetime
    expires_at: datetime
    not_before: datetime | None = None
    claims: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPage:
    sessions: list[ListedSession]
    # Keyset cursor of the last item when another page follows.
    next_cursor: tuple[datetime, SessionId] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedPrivateKey:
    """A private key at rest (envelope encryption): `ciphertext` is its PKCS#8 PEM under a
    data key of its own, and `wrapped_data_key` that data key under the key-encryption key
    `kek_id`. Both are bound to the signing key's kid, so rows cannot be swapped."""

    kek_id: str
    wrapped_data_key: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedSecret:
    """Any other secret at rest, sealed as a SealedPrivateKey is (a TOTP secret): bound to
    the row it belongs to, so it cannot be copied onto another."""

    kek_id: str
    wrapped_data_key: bytes
    ciphertext: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaintextPrivateKey:
    """A PKCS#8 PEM as stored before migration 0011; sealed at the next start-up."""

    pem: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKey:
    """Signs from `activates_at` until `retired_at` (None: until a rotation); published,
    and verifying, from creation until its tokens may have expired."""

    kid: str
    algorithm: str
    private_key: SealedPrivateKey | PlaintextPrivateKey
    public_jwk: dict[str, str]
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None

    def signs_at(self, now: datetime) -> bool:
        return self.activates_at <= now and (self.retired_at is None or now < self.retired_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketCount:
    """A login-throttle bucket: failures in its current window, and attempts admitted
    whose password is still being checked."""

    failures: int
    in_flight: int
    window_started_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepCutoffs:
    """The instants one sweep batch deletes up to, each from its retention setting."""

    now: datetime
    # Rotated refresh tokens expired before this (their expiry plus the refresh grace).
    tokens_expired_before: datetime
    # Tombstones: sessions ended before this (AUTHSVC_ENDED_SESSION_RETENTION).
    ended_before: datetime
    audit_before: datetime
    failures_before: datetime
    attempts_before: datetime
    known_addresses_before: datetime
    # Revocation-log entries of sessions ended before this.
    revocations_before: datetime
    # Webhook deliveries settled (delivered or failed) before this.
    webhook_deliveries_before: datetime


# Rows a sweep deleted, per kind the store sweeps (its names, in its order; zeros included).
SweepCounts: TypeAlias = Mapping[str, int]
# The one count of sessions marked ended (tombstones), not deleted.
EXPIRED_SESSIONS = "expired_sessions"


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepBatch:
    """What one sweep batch did: rows by kind (deleted, or for `expired_sessions` marked
    ended), and the expired sessions it marked."""

    counts: SweepCounts
    expired_sessions: tuple[ExpiredSession, ...]
