"""Protobuf <-> domain: timestamps, enums, ids and page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from google.protobuf import struct_pb2, timestamp_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from authsvc.core.errors import InvalidArgument, InvalidPageToken
from authsvc.core.factors import Assurance, AssuranceLevel, FactorKind
from authsvc.core.models import (
    AuditFilter,
    DeviceType,
    ListedSession,
    LogoutScope,
    Revocation,
    Session,
    SessionEnd,
    SessionEnder,
    SessionEnderKind,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "add_session",
    "decode_audit_page_token",
    "decode_page_token",
    "device_type_of",
    "encode_audit_page_token",
    "encode_page_token",
    "end_reason",
    "end_reason_name",
    "heartbeat_response",
    "logout_scope",
    "optional_instant",
    "page_size",
    "parse_session_id",
    "parse_user_id",
    "revocation_response",
    "session_message",
    "set_session",
    "struct_of",
    "timestamp",
]

_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAGE_TOKEN_VERSION = 1
# Our tokens are ~200 characters; anything far longer is not one of ours.
_MAX_PAGE_TOKEN_LENGTH = 1024

_DEVICE_TYPES = {
    DeviceType.UNKNOWN: pb.DEVICE_TYPE_UNSPECIFIED,
    DeviceType.DESKTOP: pb.DEVICE_TYPE_DESKTOP,
    DeviceType.MOBILE: pb.DEVICE_TYPE_MOBILE,
    DeviceType.TABLET: pb.DEVICE_TYPE_TABLET,
    DeviceType.BOT: pb.DEVICE_TYPE_BOT,
    DeviceType.OTHER: pb.DEVICE_TYPE_OTHER,
}
_DEVICE_TYPES_BY_VALUE = {value: device_type for device_type, value in _DEVICE_TYPES.items()}
_LOGOUT_SCOPES = {
    pb.LOGOUT_SCOPE_UNSPECIFIED: LogoutScope.THIS_SESSION,
    pb.LOGOUT_SCOPE_THIS_SESSION: LogoutScope.THIS_SESSION,
    pb.LOGOUT_SCOPE_OTHER_SESSIONS: LogoutScope.OTHER_SESSIONS,
    pb.LOGOUT_SCOPE_ALL_SESSIONS: LogoutScope.ALL_SESSIONS,
}

# Each stored reason is the proto value of its name (test_end_reasons.py holds both ways).
_SESSION_END_REASONS = {
    reason: pb.SessionEndReason.Value(f"SESSION_END_REASON_{reason.name}")
    for reason in SessionEndReason
}
_ENDER_KINDS = {
    SessionEnderKind.USER: pb.SESSION_ENDER_KIND_USER,
    SessionEnderKind.OPERATOR: pb.SESSION_ENDER_KIND_OPERATOR,
    SessionEnderKind.SYSTEM: pb.SESSION_ENDER_KIND_SYSTEM,
}


def end_reason(reason: SessionEndReason | None) -> pb.SessionEndReason.ValueType:
    """The proto value of a stored end reason; unspecified for none."""
    return pb.SESSION_END_REASON_UNSPECIFIED if reason is None else _SESSION_END_REASONS[reason]


def end_reason_name(reason: SessionEndReason) -> str:
    """The proto value's name, as ErrorInfo metadata `end_reason` carries it."""
    return pb.SessionEndReason.Name(_SESSION_END_REASONS[reason])


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    set_timestamp(message, instant)
    return message


# The token_type of every answer that carries tokens.
TOKEN_TYPE: Final = "Bearer"  # noqa: S105 (a scheme name, not a secret)

LEVELS: Final = {
    AssuranceLevel.AAL1: factors_pb.ASSURANCE_LEVEL_AAL1,
    AssuranceLevel.AAL2: factors_pb.ASSURANCE_LEVEL_AAL2,
}
FACTOR_TYPES: Final = {
    FactorKind.TOTP: factors_pb.FACTOR_TYPE_TOTP,
    FactorKind.RECOVERY_CODE: factors_pb.FACTOR_TYPE_RECOVERY_CODE,
    FactorKind.PASSKEY: factors_pb.FACTOR_TYPE_PASSKEY,
}
_FACTOR_KINDS: Final = {kind.value: kind for kind in FactorKind}


def set_assurance(message: pb.Session, assurance: Assurance) -> None:
    message.assurance_level = LEVELS[assurance.level]
    for method in assurance.methods:
        added = message.authentication_methods.add(method=method.amr)
        if method.method in _FACTOR_KINDS:
            added.factor_type = FACTOR_TYPES[_FACTOR_KINDS[method.method]]
        set_timestamp(added.verified_at, method.verified_at)


def set_timestamp(message: timestamp_pb2.Timestamp, instant: datetime) -> None:
    """Fill `message` in place from an aware datetime.

    Integer arithmetic on the offset from the epoch: a quarter of the cost of
    Timestamp.FromDatetime, which matters at four timestamps per listed session.
    """
    since_epoch = instant - _EPOCH
    message.seconds = since_epoch.days * 86_400 + since_epoch.seconds
    message.nanos = since_epoch.microseconds * 1_000


def struct_of(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def parse_session_id(value: str) -> SessionId:
    """The canonical 8-4-4-4-12 form only (uuid.UUID alone also takes braces, urns...)."""
    if not value:
        raise InvalidArgument("session_id", "session_id is required")
    if not _CANONICAL_UUID.fullmatch(value):
        raise InvalidArgument("session_id", "session_id is not a UUID")
    return SessionId(uuid.UUID(value))


def device_type_of(value: int, field: str) -> DeviceType:
    """A request's DeviceType; UNSPECIFIED is the unknown device, as sessions show it."""
    try:
        return _DEVICE_TYPES_BY_VALUE[value]  # type: ignore[index]
    except KeyError as exc:
        raise InvalidArgument(field, f"unknown device type {value}") from exc


def logout_scope(value: int) -> LogoutScope:
    try:
        return _LOGOUT_SCOPES[value]  # type: ignore[index]
    except KeyError as exc:
        raise InvalidArgument("scope", f"unknown logout scope {value}") from exc


def page_size(value: int) -> int:
    """AIP-158: 0 means the default, too large is clamped, negative is an error."""
    if value < 0:
        raise InvalidArgument("page_size", "page_size must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _owner_tag(user_id: UserId) -> str:
    return hashlib.sha256(user_id.bytes).hexdigest()[:16]


def _encode_token(body: dict[str, object]) -> str:
    raw = json.dumps({"v": _PAGE_TOKEN_VERSION, **body}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, tag: str) -> dict[str, Any]:
    """The body of a page token of ours issued for a request whose other fields hash to
    `tag`; InvalidPageToken for anything else."""
    if len(token) > _MAX_PAGE_TOKEN_LENGTH:
        raise InvalidPageToken
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
    except (ValueError, RecursionError, binascii.Error) as exc:
        raise InvalidPageToken from exc
    if not (
        isinstance(body, dict) and body.get("v") == _PAGE_TOKEN_VERSION and body.get("u") == tag
    ):
        raise InvalidPageToken
    return body


def encode_page_token(user_id: UserId, cursor: tuple[datetime, SessionId]) -> str:
    """Opaque keyset cursor, bound to the user who asked for it."""
    return _encode_token(
        {"t": cursor[0].isoformat(), "i": str(cursor[1]), "u": _owner_tag(user_id)}
    )


def decode_page_token(user_id: UserId, token: str) -> tuple[datetime, SessionId] | None:
    if not token:
        return None
    instant, session_id = _keyset_cursor(_decode_token(token, _owner_tag(user_id)))
    return instant, SessionId(session_id)


def _keyset_cursor(body: dict[str, Any]) -> tuple[datetime, uuid.UUID]:
    """A page token's (instant, id) cursor; InvalidPageToken if it holds none."""
    if not (isinstance(body.get("t"), str) and isinstance(body.get("i"), str)):
        raise InvalidPageToken
    try:
        instant = datetime.fromisoformat(body["t"])
        item_id = uuid.UUID(body["i"])
        # Normalised here: an offset that pushes the instant out of range fails now,
        # not in the database driver.
        instant = instant.astimezone(UTC) if instant.tzinfo is not None else instant
    except (ValueError, OverflowError) as exc:
        raise InvalidPageToken from exc
    if instant.tzinfo is None:
        raise InvalidPageToken
    return instant, item_id


def _state_tag(state: str) -> str:
    return hashlib.sha256(b"webhook-deliveries:" + state.encode()).hexdigest()[:16]


def encode_delivery_page_token(state: str, cursor: tuple[datetime, uuid.UUID]) -> str:
    """Opaque keyset cursor over webhook deliveries, bound to the state listed."""
    return _encode_token({"t": cursor[0].isoformat(), "i": str(cursor[1]), "u": _state_tag(state)})


def decode_delivery_page_token(state: str, token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    return _keyset_cursor(_decode_token(token, _state_tag(state)))


def _filter_tag(which: AuditFilter) -> str:
    described = json.dumps(
        [
            None if which.user_id is None else str(which.user_id),
            sorted(which.event_types),
            None if which.occurred_after is None else which.occurred_after.isoformat(),
            None if which.occurred_before is None else which.occurred_before.isoformat(),
        ]
    )
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def encode_audit_page_token(which: AuditFilter, before_id: int) -> str:
    """Opaque keyset cursor (the last event's id), bound to the request's filters."""
    return _encode_token({"i": before_id, "u": _filter_tag(which)})


def decode_audit_page_token(which: AuditFilter, token: str) -> int | None:
    if not token:
        return None
    before_id = _decode_token(token, _filter_tag(which)).get("i")
    if not isinstance(before_id, int) or isinstance(before_id, bool):
        raise InvalidPageToken
    return before_id


def optional_instant(
    message: timestamp_pb2.Timestamp, *, present: bool, field: str
) -> datetime | None:
    """A request's optional Timestamp field as an aware datetime; None when unset."""
    if not present:
        return None
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, f"{field} is out of range") from exc


def parse_user_id(value: str, field: str = "user_id") -> UserId:
    """The canonical 8-4-4-4-12 form only, as for session ids."""
    if not value:
        raise InvalidArgument(field, f"{field} is required")
    if not _CANONICAL_UUID.fullmatch(value):
        raise InvalidArgument(field, f"{field} is not a UUID")
    return UserId(uuid.UUID(value))


def add_session(
    sessions: RepeatedCompositeFieldContainer[pb.Session],
    session: ListedSession,
    *,
    current: SessionId | None,
) -> None:
    """Append `session` to a response's repeated `sessions` field.

    Built in place (`add()`, then field by field): a message built apart is copied
    again when the response takes it, a fifth of a listing's conversion cost.
    """
    set_session(sessions.add(), session, current=current)


def set_session(message: pb.Session, session: ListedSession, *, current: SessionId | None) -> None:
    """Fill `message` (a response's own field, built in place) with `session`'s fields."""
    message.session_id = str(session.id)
    message.device_type = _DEVICE_TYPES[session.device_type]
    message.browser = session.browser
    message.os = session.os
    message.device_name = session.device_name
    message.ip_address = session.ip_address
    message.user_agent = session.user_agent
    message.country = session.country
    message.city = session.city
    message.current = session.id == current
    message.remember_me = session.remember_me
    set_timestamp(message.created_at, session.created_at)
    set_timestamp(message.last_active_at, session.last_active_at)
    set_timestamp(message.idle_expires_at, session.idle_expires_at)
    set_timestamp(message.expires_at, session.expires_at)
    set_assurance(message, session.assurance)


def _set_ender(message: pb.SessionEnder, ender: SessionEnder) -> None:
    message.kind = _ENDER_KINDS[ender.kind]
    if ender.session_id is not None:
        message.session_id = str(ender.session_id)
    message.operator = ender.operator


def session_message(session: Session, end: SessionEnd | None, *, current: bool) -> pb.Session:
    """A session, live or ended (`end`, from domain.tombstones.end_of), as GetSession
    answers with it."""
    device = session.device
    message = pb.Session(
        session_id=str(session.id),
        user_id=str(session.user_id),
        device_type=_DEVICE_TYPES[device.device_type],
        browser=device.browser,
        os=device.os,
        device_name=device.device_name,
        ip_address=device.ip_address,
        user_agent=device.user_agent,
        country=device.country,
        city=device.city,
        current=current,
        remember_me=session.remember_me,
    )
    set_timestamp(message.created_at, session.created_at)
    set_timestamp(message.last_active_at, session.last_active_at)
    set_timestamp(message.idle_expires_at, session.idle_expires_at)
    set_timestamp(message.expires_at, session.expires_at)
    set_assurance(message, session.proven)
    if end is not None:
        set_timestamp(message.ended_at, end.ended_at)
        message.end_reason = end_reason(end.reason)
        if end.ended_by is not None:
            _set_ender(message.ended_by, end.ended_by)
    return message


def revocation_response(
    revocation: Revocation, *, tokens_expire_by: datetime
) -> pb.WatchRevocationsResponse:
    response = pb.WatchRevocationsResponse()
    message = response.revocation
    message.cursor = revocation.cursor
    message.session_id = str(revocation.session_id)
    message.user_id = str(revocation.user_id)
    message.reason = _SESSION_END_REASONS[revocation.reason]
    set_timestamp(message.revoked_at, revocation.revoked_at)
    set_timestamp(message.tokens_expire_by, tokens_expire_by)
    return response


def heartbeat_response(cursor: int, sent_at: datetime) -> pb.WatchRevocationsResponse:
    response = pb.WatchRevocationsResponse()
    response.heartbeat.cursor = cursor
    set_timestamp(response.heartbeat.sent_at, sent_at)
    return response
