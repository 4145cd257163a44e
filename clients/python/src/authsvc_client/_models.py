"""Frozen values the client returns instead of raw protobuf messages."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from authsvc_client.v1 import auth_service_pb2 as pb
from authsvc_client.v1 import second_factors_pb2 as sf_pb

__all__ = [
    "AssuranceLevel",
    "DeviceType",
    "Factor",
    "FactorList",
    "FactorProof",
    "FactorType",
    "FeedEvent",
    "Heartbeat",
    "LogoutScope",
    "PasskeyAssertion",
    "PendingLogin",
    "Principal",
    "RecoveryCode",
    "RecoveryCodes",
    "Revocation",
    "Session",
    "SessionEndReason",
    "SessionPage",
    "SteppedUp",
    "TokenPair",
    "TokenValidation",
    "TotpCode",
    "TotpConfirmation",
    "TotpEnrolment",
]


class LogoutScope(enum.IntEnum):
    """Which of the caller's sessions Logout revokes."""

    THIS_SESSION = pb.LOGOUT_SCOPE_THIS_SESSION
    OTHER_SESSIONS = pb.LOGOUT_SCOPE_OTHER_SESSIONS
    ALL_SESSIONS = pb.LOGOUT_SCOPE_ALL_SESSIONS


class DeviceType(enum.IntEnum):
    """The kind of device a session's user agent describes."""

    UNSPECIFIED = pb.DEVICE_TYPE_UNSPECIFIED
    DESKTOP = pb.DEVICE_TYPE_DESKTOP
    MOBILE = pb.DEVICE_TYPE_MOBILE
    TABLET = pb.DEVICE_TYPE_TABLET
    BOT = pb.DEVICE_TYPE_BOT
    OTHER = pb.DEVICE_TYPE_OTHER

    @classmethod
    def _missing_(cls, value: object) -> DeviceType:
        # A value added to the proto after this client was built.
        return cls.UNSPECIFIED


class SessionEndReason(enum.IntEnum):
    """Why a session ended, as the revocation feed and SessionExpired.end_reason say."""

    UNSPECIFIED = pb.SESSION_END_REASON_UNSPECIFIED
    USER_LOGOUT = pb.SESSION_END_REASON_USER_LOGOUT
    USER_REVOKED = pb.SESSION_END_REASON_USER_REVOKED
    REFRESH_TOKEN_REUSE = pb.SESSION_END_REASON_REFRESH_TOKEN_REUSE
    ADMIN_REVOKED = pb.SESSION_END_REASON_ADMIN_REVOKED
    USER_DISABLED = pb.SESSION_END_REASON_USER_DISABLED
    PASSWORD_CHANGED = pb.SESSION_END_REASON_PASSWORD_CHANGED
    PASSWORD_RESET = pb.SESSION_END_REASON_PASSWORD_RESET
    USER_DELETED = pb.SESSION_END_REASON_USER_DELETED
    IDLE_TIMEOUT = pb.SESSION_END_REASON_IDLE_TIMEOUT
    ABSOLUTE_TIMEOUT = pb.SESSION_END_REASON_ABSOLUTE_TIMEOUT
    BULK_REVOKED = pb.SESSION_END_REASON_BULK_REVOKED
    SESSION_LIMIT_EVICTED = pb.SESSION_END_REASON_SESSION_LIMIT_EVICTED
    SECOND_FACTOR_CHANGED = pb.SESSION_END_REASON_SECOND_FACTOR_CHANGED

    @classmethod
    def from_name(cls, name: str) -> SessionEndReason:
        """From the proto value's name, as ErrorInfo metadata `end_reason` carries it
        ("SESSION_END_REASON_PASSWORD_CHANGED"); UNSPECIFIED for a name this client does
        not know."""
        member = cls.__members__.get(name.removeprefix("SESSION_END_REASON_"))
        return cls.UNSPECIFIED if member is None else member

    @classmethod
    def _missing_(cls, value: object) -> SessionEndReason:
        # A reason added to the proto after this client was built.
        return cls.UNSPECIFIED


class AssuranceLevel(enum.IntEnum):
    """How strongly the person behind a session proved who they are (NIST SP 800-63B):
    AAL1 a password, AAL2 a password and a second factor, or a passkey alone. Access tokens
    carry it as their `acr` claim ("aal1", "aal2")."""

    UNSPECIFIED = sf_pb.ASSURANCE_LEVEL_UNSPECIFIED
    AAL1 = sf_pb.ASSURANCE_LEVEL_AAL1
    AAL2 = sf_pb.ASSURANCE_LEVEL_AAL2

    @classmethod
    def from_acr(cls, acr: object) -> AssuranceLevel:
        """From an access token's `acr` claim, as the service reads it: a token without one
        was minted before the service kept levels, by a password, so AAL1; a value this
        client does not know is UNSPECIFIED."""
        if acr is None:
            return cls.AAL1
        member = {level.acr: level for level in (cls.AAL1, cls.AAL2)}.get(str(acr))
        return cls.UNSPECIFIED if member is None else member

    @property
    def acr(self) -> str:
        """The `acr` claim of this level ("aal2"); "" for UNSPECIFIED."""
        return "" if self is AssuranceLevel.UNSPECIFIED else self.name.lower()

    @classmethod
    def _missing_(cls, value: object) -> AssuranceLevel:
        # A level added to the proto after this client was built.
        return cls.UNSPECIFIED


class FactorType(enum.IntEnum):
    """A kind of second factor."""

    UNSPECIFIED = sf_pb.FACTOR_TYPE_UNSPECIFIED
    TOTP = sf_pb.FACTOR_TYPE_TOTP
    RECOVERY_CODE = sf_pb.FACTOR_TYPE_RECOVERY_CODE
    PASSKEY = sf_pb.FACTOR_TYPE_PASSKEY

    @classmethod
    def from_name(cls, name: str) -> FactorType:
        """From the proto value's name ("FACTOR_TYPE_TOTP"), as STEP_UP_REQUIRED's ErrorInfo
        metadata lists them; UNSPECIFIED for a name this client does not know."""
        member = cls.__members__.get(name.strip().removeprefix("FACTOR_TYPE_"))
        return cls.UNSPECIFIED if member is None else member

    @classmethod
    def _missing_(cls, value: object) -> FactorType:
        # A kind added to the proto after this client was built.
        return cls.UNSPECIFIED


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenPair:
    """A session's access and refresh tokens. `repr()` never shows the tokens."""

    access_token: str = field(repr=False)
    access_token_expires_at: datetime
    refresh_token: str = field(repr=False)
    refresh_token_expires_at: datetime
    session_id: uuid.UUID
    user_id: uuid.UUID
    token_type: str = "Bearer"  # noqa: S105 (a scheme name, not a secret)


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One signed-in device of the caller."""

    session_id: uuid.UUID
    created_at: datetime
    last_active_at: datetime
    idle_expires_at: datetime
    expires_at: datetime
    device_type: DeviceType
    browser: str
    os: str
    device_name: str
    ip_address: str
    user_agent: str
    is_current: bool
    remember_me: bool
    # Where ip_address was at login: ISO 3166-1 alpha-2 country ("DE") and city in English.
    # Empty when unknown, or when the server has no GeoIP database configured.
    country: str = ""
    city: str = ""
    # How strongly the user proved who they are in this session (Refresh keeps it).
    assurance_level: AssuranceLevel = AssuranceLevel.UNSPECIFIED


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPage:
    """One page of sessions; `next_page_token` is empty on the last page."""

    sessions: tuple[Session, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenValidation:
    """The service's answer to "may I trust this access token right now?" (ValidateToken).

    `inactive_reason` is an ErrorInfo reason (TOKEN_EXPIRED, TOKEN_INVALID, SESSION_REVOKED,
    SESSION_EXPIRED) when `is_active` is false; for the last two, `end_reason` and `ended_at`
    say why and when the session ended (while the service keeps it). The identity fields are
    set whenever the signature was valid, active or not.
    """

    is_active: bool
    inactive_reason: str
    user_id: uuid.UUID | None
    session_id: uuid.UUID | None
    expires_at: datetime | None
    issued_at: datetime | None
    claims: Mapping[str, Any]
    end_reason: SessionEndReason = SessionEndReason.UNSPECIFIED
    ended_at: datetime | None = None
    # The token's `acr` and `amr` claims; set when the signature is valid.
    assurance_level: AssuranceLevel = AssuranceLevel.UNSPECIFIED
    amr: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who an access token speaks for, once verified.

    `assurance_level` is the token's `acr` (AAL2: the session verified a second factor, or
    began with a passkey); `amr` its RFC 8176 methods, e.g. ("pwd", "otp", "mfa"). Both
    describe the session when the token was minted; StepUp mints a new token.
    """

    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: datetime
    claims: Mapping[str, Any]
    assurance_level: AssuranceLevel = AssuranceLevel.UNSPECIFIED
    amr: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    """A session ended (WatchRevocations): deny its access tokens until `tokens_expire_by`,
    after which every one of them has expired anyway."""

    cursor: int
    session_id: uuid.UUID
    user_id: uuid.UUID
    reason: SessionEndReason
    revoked_at: datetime
    tokens_expire_by: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """The feed is alive, and every revocation up to `cursor` has been sent."""

    cursor: int
    sent_at: datetime


FeedEvent = Revocation | Heartbeat
"""One message of WatchRevocations."""


# --- second factors ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingLogin:
    """A login whose password was right and that needs one more step before it becomes a
    session (Login's SecondFactorStep). It holds no session tokens: the pending login token
    is good only for `complete_login` (or, when `enrolment_required`, for `enrol_totp` and
    `confirm_totp`), until `expires_at` and for a few wrong codes. `repr()` never shows it.
    """

    pending_login_token: str = field(repr=False)
    expires_at: datetime
    # The factors the user can complete the login with.
    factor_types: tuple[FactorType, ...]
    # The account must enrol a second factor first (the service's policy or an operator's
    # mark); finishing the enrolment completes the login.
    enrolment_required: bool


@dataclass(frozen=True, slots=True)
class TotpCode:
    """The 6 digits the user's TOTP app shows now."""

    code: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RecoveryCode:
    """One of the user's unused recovery codes (case and dashes ignored); used up by the
    call that verifies it."""

    code: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PasskeyAssertion:
    """A WebAuthn assertion: the browser's PublicKeyCredential as JSON, for the challenge
    `challenge_id` from BeginPasskeyAssertion."""

    challenge_id: uuid.UUID | str
    credential_json: str = field(repr=False)


FactorProof = TotpCode | RecoveryCode | PasskeyAssertion
"""One verification of a second factor, for `complete_login` and `step_up`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Factor:
    """One of the user's confirmed second factors (never a secret)."""

    factor_id: uuid.UUID
    type: FactorType
    name: str
    created_at: datetime
    # When it last proved a sign-in or a step-up; None if never.
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FactorList:
    """The caller's confirmed factors (oldest first), how many unused recovery codes are
    left, and whether the user must have a second factor."""

    factors: tuple[Factor, ...]
    recovery_codes_remaining: int
    second_factor_required: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpEnrolment:
    """A TOTP enrolment awaiting `confirm_totp`: the secret, shown once. `repr()` shows
    neither the secret nor the URI that contains it."""

    factor_id: uuid.UUID
    # The base32 secret, for typing into an app.
    secret: str = field(repr=False)
    # otpauth://totp/..., for a QR code.
    provisioning_uri: str = field(repr=False)
    # Confirm before this instant, or enrol again.
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpConfirmation:
    """A confirmed TOTP factor. `recovery_codes` are shown once, when it is the user's first
    factor (else empty). `tokens` is the new session when the enrolment completed a pending
    login (None in a session, whose access token the client has replaced)."""

    factor: Factor
    recovery_codes: tuple[str, ...] = field(repr=False)
    tokens: TokenPair | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SteppedUp:
    """The session after StepUp: its level, and until when sensitive calls need no other
    step-up. The client has swapped in the new access token (same session, same refresh
    token)."""

    assurance_level: AssuranceLevel
    step_up_expires_at: datetime
    access_token_expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCodes:
    """A new set of recovery codes, shown once (the old set no longer works), and how many
    of the user's other sessions the change ended."""

    recovery_codes: tuple[str, ...] = field(repr=False)
    revoked_session_count: int


def instant(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def token_pair(
    response: pb.RegisterResponse
    | pb.LoginResponse
    | pb.RefreshResponse
    | pb.CompleteLoginResponse
    | pb.SignedIn,
) -> TokenPair:
    return TokenPair(
        access_token=response.access_token,
        access_token_expires_at=instant(response.access_token_expires_at),
        refresh_token=response.refresh_token,
        refresh_token_expires_at=instant(response.refresh_token_expires_at),
        session_id=uuid.UUID(response.session_id),
        user_id=uuid.UUID(response.user_id),
        token_type=response.token_type or "Bearer",
    )


def optional_instant(message: Any, name: str) -> datetime | None:
    return instant(getattr(message, name)) if message.HasField(name) else None


def pending_login(step: sf_pb.SecondFactorStep) -> PendingLogin:
    return PendingLogin(
        pending_login_token=step.pending_login_token,
        expires_at=instant(step.expires_at),
        factor_types=tuple(FactorType(value) for value in step.factor_types),
        enrolment_required=step.enrolment_required,
    )


def factor_proof(proof: FactorProof) -> sf_pb.FactorProof:
    match proof:
        case TotpCode(code):
            return sf_pb.FactorProof(totp_code=code)
        case RecoveryCode(code):
            return sf_pb.FactorProof(recovery_code=code)
        case PasskeyAssertion(challenge_id, credential_json):
            return sf_pb.FactorProof(
                passkey=sf_pb.PasskeyAssertion(
                    challenge_id=str(challenge_id), credential_json=credential_json
                )
            )
    raise TypeError(f"not a FactorProof: {type(proof).__name__}")


def factor(message: sf_pb.Factor) -> Factor:
    return Factor(
        factor_id=uuid.UUID(message.factor_id),
        type=FactorType(message.type),
        name=message.name,
        created_at=instant(message.created_at),
        last_used_at=optional_instant(message, "last_used_at"),
    )


def signed_in_pair(message: pb.SignedIn) -> TokenPair | None:
    """The session a pending login became, or None for an enrolment made in a session
    (which carries a new access token only)."""
    if not message.refresh_token:
        return None
    return token_pair(message)


def session(message: pb.Session) -> Session:
    return Session(
        session_id=uuid.UUID(message.session_id),
        created_at=instant(message.created_at),
        last_active_at=instant(message.last_active_at),
        idle_expires_at=instant(message.idle_expires_at),
        expires_at=instant(message.expires_at),
        device_type=DeviceType(message.device_type),
        browser=message.browser,
        os=message.os,
        device_name=message.device_name,
        ip_address=message.ip_address,
        user_agent=message.user_agent,
        is_current=message.current,
        remember_me=message.remember_me,
        country=message.country,
        city=message.city,
        assurance_level=AssuranceLevel(message.assurance_level),
    )


def token_validation(message: pb.ValidateTokenResponse) -> TokenValidation:
    return TokenValidation(
        is_active=message.active,
        inactive_reason=message.inactive_reason,
        user_id=uuid.UUID(message.user_id) if message.user_id else None,
        session_id=uuid.UUID(message.session_id) if message.session_id else None,
        expires_at=instant(message.expires_at) if message.HasField("expires_at") else None,
        issued_at=instant(message.issued_at) if message.HasField("issued_at") else None,
        claims=json_format.MessageToDict(message.claims) if message.HasField("claims") else {},
        end_reason=SessionEndReason(message.end_reason),
        ended_at=instant(message.ended_at) if message.HasField("ended_at") else None,
        assurance_level=AssuranceLevel(message.assurance_level),
        amr=tuple(message.amr),
    )


def feed_event(message: pb.WatchRevocationsResponse) -> FeedEvent | None:
    """The event a feed message carries; None for a kind newer than this client."""
    match message.WhichOneof("event"):
        case "revocation":
            revocation = message.revocation
            return Revocation(
                cursor=revocation.cursor,
                session_id=uuid.UUID(revocation.session_id),
                user_id=uuid.UUID(revocation.user_id),
                reason=SessionEndReason(revocation.reason),
                revoked_at=instant(revocation.revoked_at),
                tokens_expire_by=instant(revocation.tokens_expire_by),
            )
        case "heartbeat":
            return Heartbeat(
                cursor=message.heartbeat.cursor, sent_at=instant(message.heartbeat.sent_at)
            )
    return None
