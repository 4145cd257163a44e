"""What every AdminService call shares: its audit event, with the operator who made it."""

from __future__ import annotations

import enum
from datetime import datetime

from authsvc.core.models import AuditEvent, Operator, SessionId, UserId

__all__ = ["AdminEvent", "admin_event"]


class AdminEvent(enum.StrEnum):
    """The audit event each AdminService RPC writes, read or write, once per call."""

    USER_VIEWED = "admin_user_viewed"
    SESSIONS_LISTED = "admin_sessions_listed"
    SESSIONS_REVOKED = "admin_sessions_revoked"
    USER_DISABLED = "admin_user_disabled"
    USER_ENABLED = "admin_user_enabled"
    USER_DELETED = "admin_user_deleted"
    LOGIN_THROTTLE_CLEARED = "admin_login_throttle_cleared"
    AUDIT_LISTED = "admin_audit_listed"
    PASSWORD_RESET_TOKEN_CREATED = "admin_password_reset_token_created"  # noqa: S105


def admin_event(
    event: AdminEvent,
    operator: Operator,
    now: datetime,
    *,
    user_id: UserId | None = None,
    session_id: SessionId | None = None,
    **detail: object,
) -> AuditEvent:
    """The audit event of an admin call: from the operator's address, its detail naming
    the operator (`operator`, `via`) beside the call's own fields. Never personal data in
    `detail` (no email): it outlives a deleted account."""
    return AuditEvent(
        event=event.value,
        occurred_at=now,
        user_id=user_id,
        session_id=session_id,
        origin=operator.origin,
        detail={**operator.audit_detail, **detail},
    )
