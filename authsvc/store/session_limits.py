"""SQL for the per-user session limit, run inside a session insert's transaction.

The user's row lock (FOR UPDATE, the lock store/accounts.py's changes take first) makes
concurrent logins of one user, on any replica, count and evict one after another: each
sees the sessions the one before it committed. Lock order is the accounts' (the user,
then its sessions), so a limit cannot deadlock with DisableUser or ChangePassword.
"""

from __future__ import annotations

from datetime import datetime

from authsvc.core.errors import SessionLimitReached
from authsvc.core.models import EndedSession, SessionEndReason, SessionId, UserId
from authsvc.core.session_limits import SessionCap, SessionLimitPolicy
from authsvc.store.pool import Connection
from authsvc.store.revocations import append_revocations

__all__ = ["enforce_cap"]

# Whether the sign-in may still go ahead (the insert's own conditions); NULL if the
# account is gone. Otherwise the insert refuses it with the right error, and the limit
# need not be looked at.
_LOCK_USER = """
SELECT disabled_at IS NULL AND password_hash = $2 FROM users WHERE id = $1 FOR UPDATE
"""
# Live as everywhere (idle_expires_at never passes expires_at), counted no further than
# the limit: a user far over a newly lowered limit costs no more than one at it. The
# partial index sessions_user_live_idx serves both statements.
_COUNT_LIVE = """
SELECT count(*) FROM (
    SELECT 1 FROM sessions
    WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
    LIMIT $3
) AS live
"""
# Keeps the $3 most recently active live sessions and ends the rest, each with its audit
# event ($6.. = event, ip, user agent, detail); enforce_cap then puts each ending on the
# revocation feed.
_EVICT_LEAST_RECENT = """
WITH evicted AS (
    UPDATE sessions
    SET revoked_at = $2, revoke_reason = $4, end_reason = $5, ended_by_kind = 'system'
    WHERE user_id = $1 AND id IN (
        SELECT id FROM sessions
        WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
        ORDER BY last_active_at DESC, id DESC
        OFFSET $3
    ) AND revoked_at IS NULL
    RETURNING id, user_id, created_at
), audited AS (
    INSERT INTO audit_events
        (occurred_at, event, user_id, session_id, ip_address, user_agent, detail)
    SELECT $2, $6, user_id, id, $7, $8, $9 FROM evicted
)
SELECT id, created_at FROM evicted
"""


async def enforce_cap(
    conn: Connection, user_id: UserId, *, cap: SessionCap, now: datetime, verified_hash: str
) -> list[EndedSession]:
    """Make room for one more live session of the user under `cap`, in the caller's
    transaction, holding the user's row lock until it ends. The sessions evicted;
    SessionLimitReached, with nothing written, if the policy refuses. Nothing is done
    for a sign-in the session insert will refuse (disabled, password changed, gone)."""
    if not await conn.fetchval(_LOCK_USER, user_id, verified_hash):
        return []
    if cap.policy is SessionLimitPolicy.REFUSE:
        if await conn.fetchval(_COUNT_LIVE, user_id, now, cap.limit) >= cap.limit:
            raise SessionLimitReached("the account has as many sessions as its limit allows")
        return []
    event = cap.event
    rows = await conn.fetch(
        _EVICT_LEAST_RECENT,
        user_id,
        now,
        cap.limit - 1,
        cap.revoke_reason,
        SessionEndReason.SESSION_LIMIT_EVICTED.value,
        event.event,
        event.origin.ip_address,
        event.origin.user_agent,
        event.detail,
    )
    evicted = [EndedSession(id=SessionId(row["id"]), created_at=row["created_at"]) for row in rows]
    await append_revocations(
        conn,
        [(session.id, user_id) for session in evicted],
        reason=SessionEndReason.SESSION_LIMIT_EVICTED,
        revoked_at=now,
    )
    return evicted
