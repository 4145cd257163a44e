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

__all__ = [
    "DeviceType",
    "FeedEvent",
    "Heartbeat",
    "LogoutScope",
    "Principal",
    "Revocation",
    "Session",
    "SessionEndReason",
    "SessionPage",
    "TokenPair",
    "TokenValidation",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who an access token speaks for, once verified."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: datetime
    claims: Mapping[str, Any]


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


def instant(message: timestamp_pb2.Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def token_pair(response: pb.RegisterResponse | pb.LoginResponse | pb.RefreshResponse) -> TokenPair:
    return TokenPair(
        access_token=response.access_token,
        access_token_expires_at=instant(response.access_token_expires_at),
        refresh_token=response.refresh_token,
        refresh_token_expires_at=instant(response.refresh_token_expires_at),
        session_id=uuid.UUID(response.session_id),
        user_id=uuid.UUID(response.user_id),
        token_type=response.token_type or "Bearer",
    )


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
