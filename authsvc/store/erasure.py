"""SQL for DeleteUser: one transaction that ends an account's sessions and erases it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from authsvc.core.models import AuditEvent, EndedSession, SessionEnder, SessionEndReason, UserId
from authsvc.store.emails import release_email
from authsvc.store.errors import translate_errors
from authsvc.store.sessions import end_user_sessions

__all__ = ["PgErasureStore"]

# The row lock serialises the deletion with a reset, a disabling, and (in the session
# insert) a login of the account.
_LOCK_USER = "SELECT email FROM users WHERE id = $1 FOR UPDATE"
_SESSION_ADDRESSES = (
    "SELECT DISTINCT ip_address FROM sessions WHERE user_id = $1 AND ip_address <> ''"
)
_DELETE_FAILURES = "DELETE FROM login_failures WHERE bucket = ANY($1::text[])"
_DELETE_KNOWN_ADDRESSES = "DELETE FROM login_known_addresses WHERE pair_bucket = ANY($1::text[])"
# Refresh lineage keeps callers' addresses and user agents: blanked here, whether or not
# the rows then go with their sessions, so no later way of keeping a session's row keeps them.
_ERASE_LINEAGE = """
UPDATE refresh_lineage SET ip_address = '', user_agent = ''
WHERE user_id = $1
  AND (ip_address <> '' OR user_agent <> '')
"""
# Reset tokens have no foreign key to users since migration 0026: deleted by user here.
# Issuing one takes the account's key-share lock, so none can be added after _LOCK_USER.
_DELETE_RESET_TOKENS = "DELETE FROM password_reset_tokens WHERE user_id = $1"
# Cascades to its sessions and their refresh tokens (migrations 0002, 0003); the
# revocation log and the audit trail have no foreign keys and keep ids.
_DELETE_USER = "DELETE FROM users WHERE id = $1"
# The one update migration 0016 lets through, once the account row is gone. Admin events
# keep theirs: their address and user agent are the operator's, not the user's.
_ERASE_AUDIT = """
UPDATE audit_events SET ip_address = '', user_agent = '', detail = detail - $2::text[]
WHERE user_id = $1 AND event NOT LIKE 'admin\\_%'
  AND (ip_address <> '' OR user_agent <> '' OR detail ?| $2::text[])
"""

# session.created events (migration 0023) carry the sign-in's address and place; the ended
# events this deletion writes carry none, and are still delivered.
_ERASE_WEBHOOK_ADDRESSES = """
UPDATE webhook_deliveries SET data = data - '{ip_address,country,city}'::text[]
WHERE user_id = $1 AND data ? 'ip_address'
"""


class PgErasureStore:
    """domain.erasure.ErasureStore in PostgreSQL; the contract is on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
        # One transaction: if any statement fails, or the connection drops, PostgreSQL
        # rolls all of it back and the account is as it was, sessions included.
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            email = await conn.fetchval(_LOCK_USER, user_id)
            if email is None:
                return None
            addresses = [row["ip_address"] for row in await conn.fetch(_SESSION_ADDRESSES, user_id)]
            ended = await end_user_sessions(
                conn,
                user_id,
                now=now,
                revoke_reason=SessionEndReason.USER_DELETED.value,
                ended_by=SessionEndReason.USER_DELETED,
                ender=ender,
                event=event,
                keep=None,
            )
            buckets = throttle_buckets(email, addresses)
            await conn.execute(_DELETE_FAILURES, buckets)
            await conn.execute(_DELETE_KNOWN_ADDRESSES, buckets)
            await conn.execute(_ERASE_LINEAGE, user_id)
            await conn.execute(_DELETE_RESET_TOKENS, user_id)
            # The email is free for a new account once this commits.
            await release_email(conn, email, user_id)
            await conn.execute(_DELETE_USER, user_id)
            await conn.execute(_ERASE_AUDIT, user_id, list(personal_detail_keys))
            await conn.execute(_ERASE_WEBHOOK_ADDRESSES, user_id)
        return ended
