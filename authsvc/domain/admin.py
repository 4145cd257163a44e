"""AdminService's use cases (reads, RevokeUserSessions, ClearLoginThrottle), and what every
admin call shares: its audit event, with the operator who made it."""

from __future__ import annotations

import enum
import ipaddress
import logging
from datetime import datetime, timedelta
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import InvalidArgument, SessionNotFound, UserNotFound
from authsvc.core.models import (
    Account,
    AuditEvent,
    AuditFilter,
    AuditPage,
    Operator,
    Session,
    SessionEnd,
    SessionEnder,
    SessionEndReason,
    SessionId,
    SessionPage,
    UserId,
)
from authsvc.domain import validation
from authsvc.domain.sessions import SessionService
from authsvc.domain.throttle import (
    account_bucket,
    escalated_account_bucket,
    ip_bucket,
    pair_bucket,
)
from authsvc.domain.tombstones import end_of

__all__ = [
    "MAX_ADMIN_REASON",
    "AdminActions",
    "AdminEvent",
    "AdminStore",
    "admin_event",
    "admin_reason",
]

_log = logging.getLogger(__name__)


class AdminEvent(enum.StrEnum):
    """The audit event each AdminService RPC writes, read or write, once per call."""

    USER_VIEWED = "admin_user_viewed"
    SESSION_VIEWED = "admin_session_viewed"
    SESSIONS_LISTED = "admin_sessions_listed"
    SESSIONS_REVOKED = "admin_sessions_revoked"
    USER_DISABLED = "admin_user_disabled"
    USER_ENABLED = "admin_user_enabled"
    USER_DELETED = "admin_user_deleted"
    LOGIN_THROTTLE_CLEARED = "admin_login_throttle_cleared"
    AUDIT_LISTED = "admin_audit_listed"
    PASSWORD_RESET_TOKEN_CREATED = "admin_password_reset_token_created"  # noqa: S105
    # RevokeSessions, dry run or not (detail: filter, reason, dry_run, session_count).
    SESSIONS_BULK_REVOKED = "admin_sessions_bulk_revoked"
    SESSION_LINEAGE_VIEWED = "admin_session_lineage_viewed"
    WEBHOOK_DELIVERIES_LISTED = "admin_webhook_deliveries_listed"
    WEBHOOK_DELIVERY_RETRIED = "admin_webhook_delivery_retried"
    # Second factors (domain/factors.py).
    USER_FACTORS_LISTED = "admin_user_factors_listed"
    USER_FACTOR_REMOVED = "admin_user_factor_removed"
    SECOND_FACTOR_REQUIRED_SET = "admin_second_factor_required_set"


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


class AdminStore(Protocol):
    """What AdminService reads and clears. Every method raises DatabaseUnavailable when the
    database cannot be reached in time; then nothing it would have written is written."""

    async def view_account(
        self,
        *,
        user_id: UserId | None = None,
        email: str | None = None,
        now: datetime,
        event: AuditEvent,
    ) -> Account | None:
        """The account with this id, or else this exact (canonical) email, with its live
        sessions counted at `now`; None if there is none. Records `event` in the same
        transaction, stamped with the account's id if found, its detail with `found`."""
        ...

    async def list_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        limit: int,
        after: tuple[datetime, SessionId] | None,
        event: AuditEvent,
    ) -> SessionPage | None:
        """One page of the user's live sessions, as `SessionStore.list_live_sessions`
        pages them, and `event` recorded with `listed_count`, in one transaction; None,
        with nothing recorded, if there is no such user."""
        ...

    async def view_session(self, session_id: SessionId, *, event: AuditEvent) -> Session | None:
        """The session, live or ended, as `SessionStore.get_session` reads it; None if
        there is none. Records `event` in the same transaction, stamped with the session
        and its user if found, its detail with `found`."""
        ...

    async def user_exists(self, user_id: UserId) -> bool: ...

    async def user_by_email(self, email: str) -> UserId | None:
        """The id of the account with this exact (canonical) email, if any."""
        ...

    async def failed_login_addresses(self, user_id: UserId, *, since: datetime) -> list[str]:
        """The client addresses of the user's failed logins at or after `since`."""
        ...

    async def failed_login_emails(self, ip_address: str, *, since: datetime) -> list[str]:
        """The emails of the accounts whose logins failed from exactly this address at or
        after `since`."""
        ...

    async def clear_login_failures(self, buckets: list[str], *, event: AuditEvent) -> None:
        """Forgive every failure counted in these throttle buckets and record `event`,
        atomically. Buckets that hold no row are no error."""
        ...

    async def list_audit_events(
        self, which: AuditFilter, *, limit: int, before_id: int | None, event: AuditEvent
    ) -> AuditPage:
        """At most `limit` audit events that `which` selects, newest (highest id) first,
        only those with an id below `before_id` if given; `next_cursor` is the last one's id
        when more follow. Records `event` with `listed_count` in the same transaction
        (the page never shows it)."""
        ...


# The longest free-text reason an operator gives (RevokeUserSessions, DisableUser, ...).
MAX_ADMIN_REASON = 200


def admin_reason(value: str) -> str:
    """An operator's reason: required, one short line."""
    reason = validation.clean_label("reason", value, max_length=MAX_ADMIN_REASON)
    if not reason:
        raise InvalidArgument("reason", "reason is required")
    return reason


class AdminActions:
    """The use cases behind AdminService's reads, RevokeUserSessions and
    ClearLoginThrottle. Each call records one audit event naming its operator, in the
    transaction of what it read or changed."""

    def __init__(
        self,
        *,
        store: AdminStore,
        sessions: SessionService,
        clock: Clock,
        login_failure_window: timedelta,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._clock = clock
        # How far back a failed login can still count in a pair bucket.
        self._login_failure_window = login_failure_window

    async def get_user(
        self, operator: Operator, *, user_id: UserId | None = None, email: str | None = None
    ) -> Account:
        """The account by id, or by email in any spelling with its canonical form.
        UserNotFound if there is none; the lookup is audited either way (by email it is
        an enumeration oracle, for operators only)."""
        now = self._clock.now()
        if user_id is None:
            if not email:
                raise InvalidArgument("user", "user_id or email is required")
            email = validation.normalize_email(email)
        account = await self._store.view_account(
            user_id=user_id,
            email=email,
            now=now,
            event=admin_event(
                AdminEvent.USER_VIEWED, operator, now, by="user_id" if user_id else "email"
            ),
        )
        if account is None:
            raise UserNotFound("no such user")
        return account

    async def get_session(
        self, operator: Operator, session_id: SessionId
    ) -> tuple[Session, SessionEnd | None]:
        """Any session, live or ended while it is kept, with how it ended (None while
        live). SessionNotFound if there is none; the lookup is audited either way."""
        now = self._clock.now()
        session = await self._store.view_session(
            session_id,
            event=admin_event(AdminEvent.SESSION_VIEWED, operator, now, session_id=session_id),
        )
        if session is None:
            raise SessionNotFound("session not found")
        return session, end_of(session, now)

    async def list_user_sessions(
        self,
        operator: Operator,
        user_id: UserId,
        *,
        page_size: int,
        after: tuple[datetime, SessionId] | None,
    ) -> SessionPage:
        now = self._clock.now()
        page = await self._store.list_sessions(
            user_id,
            now=now,
            limit=page_size,
            after=after,
            event=admin_event(
                AdminEvent.SESSIONS_LISTED, operator, now, user_id=user_id, page_size=page_size
            ),
        )
        if page is None:
            raise UserNotFound("no such user")
        return page

    async def revoke_user_sessions(self, operator: Operator, user_id: UserId, reason: str) -> int:
        """End every live session of the user (ADMIN_REVOKED) through the revocation feed;
        the user can sign in again. Returns how many this call ended."""
        reason = admin_reason(reason)
        if not await self._store.user_exists(user_id):
            raise UserNotFound("no such user")
        count = await self._sessions.end_user_sessions(
            user_id,
            SessionEndReason.ADMIN_REVOKED,
            ender=SessionEnder.by_operator(operator.name),
            audit_event=AdminEvent.SESSIONS_REVOKED.value,
            origin=operator.origin,
            detail={**operator.audit_detail, "reason": reason},
            note=reason,
        )
        _log.info(
            "admin revoked user sessions",
            extra={
                "event": AdminEvent.SESSIONS_REVOKED.value,
                "operator": operator.name,
                "user_id": str(user_id),
                "revoked": count,
            },
        )
        return count

    async def disable_user(
        self, operator: Operator, user_id: UserId, reason: str
    ) -> tuple[Account, int]:
        """Disable the account and end every session of it (SessionService.disable_user).
        Returns the account after it and how many sessions it ended."""
        reason = admin_reason(reason)
        now = self._clock.now()
        account, count = await self._sessions.disable_user(
            user_id,
            reason=reason,
            ender=SessionEnder.by_operator(operator.name),
            event=admin_event(
                AdminEvent.USER_DISABLED, operator, now, user_id=user_id, reason=reason
            ),
        )
        _log.info(
            "admin disabled a user",
            extra={
                "event": AdminEvent.USER_DISABLED.value,
                "operator": operator.name,
                "user_id": str(user_id),
                "revoked": count,
            },
        )
        return account, count

    async def enable_user(self, operator: Operator, user_id: UserId) -> Account:
        """Let a disabled account sign in again (SessionService.enable_user)."""
        now = self._clock.now()
        account = await self._sessions.enable_user(
            user_id, event=admin_event(AdminEvent.USER_ENABLED, operator, now, user_id=user_id)
        )
        _log.info(
            "admin enabled a user",
            extra={
                "event": AdminEvent.USER_ENABLED.value,
                "operator": operator.name,
                "user_id": str(user_id),
            },
        )
        return account

    async def clear_login_throttle(
        self, operator: Operator, *, email: str | None = None, ip_address: str | None = None
    ) -> None:
        """Lift the lockouts and failure counts of an email (its account buckets, and its
        pair buckets with each address it failed from in the window) or of an address (its
        address bucket, and its pair buckets with each account that failed from it).
        Clearing what holds no failures succeeds."""
        now = self._clock.now()
        since = now - self._login_failure_window
        user_id: UserId | None = None
        if email is not None:
            email = validation.normalize_email(email)
            user_id = await self._store.user_by_email(email)
            addresses = (
                []
                if user_id is None
                else await self._store.failed_login_addresses(user_id, since=since)
            )
            buckets = [account_bucket(email), escalated_account_bucket(email)]
            buckets += [pair_bucket(email, address) for address in addresses]
            event = admin_event(
                AdminEvent.LOGIN_THROTTLE_CLEARED, operator, now, user_id=user_id, subject="email"
            )
        elif ip_address is not None:
            ip_address = _checked_address(ip_address)
            emails = await self._store.failed_login_emails(ip_address, since=since)
            buckets = [ip_bucket(ip_address)]
            buckets += [pair_bucket(known, ip_address) for known in emails]
            event = admin_event(
                AdminEvent.LOGIN_THROTTLE_CLEARED,
                operator,
                now,
                subject="ip_address",
                cleared_address=ip_address,
            )
        else:
            raise InvalidArgument("subject", "email or ip_address is required")
        await self._store.clear_login_failures(sorted(set(buckets)), event=event)
        _log.info(
            "admin cleared a login throttle",
            extra={
                "event": AdminEvent.LOGIN_THROTTLE_CLEARED.value,
                "operator": operator.name,
                "user_id": "" if user_id is None else str(user_id),
                "subject": event.detail["subject"],
            },
        )

    async def list_audit_events(
        self, operator: Operator, which: AuditFilter, *, page_size: int, before_id: int | None
    ) -> AuditPage:
        for event_type in which.event_types:
            validation.clean_label("event_types", event_type, max_length=_MAX_EVENT_TYPE)
        if len(which.event_types) > _MAX_EVENT_TYPES:
            raise InvalidArgument("event_types", f"at most {_MAX_EVENT_TYPES} event types")
        now = self._clock.now()
        return await self._store.list_audit_events(
            which,
            limit=page_size,
            before_id=before_id,
            event=admin_event(
                AdminEvent.AUDIT_LISTED,
                operator,
                now,
                filter=_described(which),
                page_size=page_size,
            ),
        )


_MAX_EVENT_TYPE = 64
_MAX_EVENT_TYPES = 50


def _described(which: AuditFilter) -> dict[str, object]:
    """The filter as the audit trail keeps it (JSON)."""
    described: dict[str, object] = {}
    if which.user_id is not None:
        described["user_id"] = str(which.user_id)
    if which.event_types:
        described["event_types"] = list(which.event_types)
    if which.occurred_after is not None:
        described["occurred_after"] = which.occurred_after.isoformat()
    if which.occurred_before is not None:
        described["occurred_before"] = which.occurred_before.isoformat()
    return described


def _checked_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise InvalidArgument("ip_address", "ip_address is not an IP address") from exc
