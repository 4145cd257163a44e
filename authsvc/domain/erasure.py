"""DeleteUser: end an account's sessions and erase its personal data, keeping the ids the
audit trail needs for accountability (docs/operations.md, "Account lifecycle")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import UserNotFound
from authsvc.core.models import (
    AuditEvent,
    EndedSession,
    Operator,
    SessionEnder,
    SessionEndReason,
    UserId,
)
from authsvc.domain.admin import AdminEvent, admin_event, admin_reason
from authsvc.domain.sessions import SessionService
from authsvc.domain.throttle import account_bucket, escalated_account_bucket, pair_bucket

__all__ = ["PERSONAL_DETAIL_KEYS", "AccountErasure", "ErasureStore", "throttle_buckets_of"]

_log = logging.getLogger(__name__)

# Audit detail keys that may hold what a user wrote (RevokeSession's note): dropped from
# a deleted account's events. Operators' notes are kept; the API asks for none personal.
PERSONAL_DETAIL_KEYS = ("note",)


def throttle_buckets_of(email: str, addresses: list[str]) -> list[str]:
    """The login-throttle rows keyed by the account's email: its account buckets, and its
    pair buckets (failures and known addresses) for each address given."""
    pairs = [pair_bucket(email, address) for address in addresses]
    return [account_bucket(email), escalated_account_bucket(email), *pairs]


class ErasureStore(Protocol):
    async def delete_user(
        self,
        user_id: UserId,
        *,
        now: datetime,
        throttle_buckets: Callable[[str, list[str]], list[str]],
        personal_detail_keys: tuple[str, ...],
        ender: SessionEnder,
        event: AuditEvent,
    ) -> list[EndedSession] | None:
        """Delete the account, in one transaction holding its row lock: end each of its
        live sessions as USER_DELETED by `ender`, with `event` recorded as
        `SessionStore.end_user_sessions` records it (the revocation log keeps the
        endings); delete the login-throttle rows named by `throttle_buckets(email,
        addresses of its sessions)`; blank the address and user agent of each step of
        its sessions' refresh lineage; delete the account row with its sessions, refresh
        tokens, lineage and reset tokens, and free its email for a new account; and on its
        audit events other than admin ones (whose address is the operator's) blank the
        address and user agent and drop the `personal_detail_keys`. The sessions ended;
        None, with nothing written, if there is no such account. DatabaseUnavailable if
        the database cannot be reached in time; then nothing is written."""
        ...


class AccountErasure:
    def __init__(self, *, store: ErasureStore, sessions: SessionService, clock: Clock) -> None:
        self._store = store
        self._sessions = sessions
        self._clock = clock

    async def delete_user(self, user_id: UserId, *, reason: str, operator: Operator) -> int:
        """Delete the account and end its sessions; the number ended. UserNotFound if it
        does not exist (deleted already, say). All or nothing: a failure midway leaves
        the account as it was, to delete again. `reason`: required, one short line."""
        reason = admin_reason(reason)
        now = self._clock.now()
        ended = await self._store.delete_user(
            user_id,
            now=now,
            throttle_buckets=throttle_buckets_of,
            personal_detail_keys=PERSONAL_DETAIL_KEYS,
            ender=SessionEnder.by_operator(operator.name),
            event=admin_event(
                AdminEvent.USER_DELETED, operator, now, user_id=user_id, reason=reason
            ),
        )
        if ended is None:
            raise UserNotFound("user not found")
        self._sessions.sessions_ended(user_id, ended, SessionEndReason.USER_DELETED, now)
        _log.info(
            "user deleted",
            extra={
                "event": "user_deleted",
                "user_id": str(user_id),
                "operator": operator.name,
            },
        )
        return len(ended)
