"""SQL for AdminService's reads and the throttle it clears. Each call's audit event is
inserted in the transaction of what it read or changed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import asyncpg

from authsvc.core.factors import FactorKind
from authsvc.core.models import (
    Account,
    AuditEvent,
    AuditFilter,
    AuditPage,
    AuditRecord,
    Session,
    SessionId,
    SessionPage,
    UserId,
)
from authsvc.store.audit import event_of, insert_event
from authsvc.store.emails import owner_of_email
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection
from authsvc.store.sessions import fetch_live_page, fetch_session
from authsvc.store.throttle import forgive_failures

__all__ = ["PgAdminStore", "fetch_account"]

_ACCOUNT_COLUMNS = """
    u.id, u.email, u.display_name, u.created_at, u.updated_at, u.disabled_at,
    u.disabled_reason, u.second_factor_required,
    ARRAY(SELECT f.kind FROM user_factors f
          WHERE f.user_id = u.id AND f.confirmed_at IS NOT NULL
          ORDER BY f.confirmed_at, f.id) AS factor_kinds,
    (SELECT count(*) FROM sessions s
     WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.idle_expires_at > $2
    ) AS live_session_count
"""
# (Constants only in these f-strings: every value is a parameter.)
_ACCOUNT_BY_ID = f"SELECT {_ACCOUNT_COLUMNS} FROM users u WHERE u.id = $1"  # noqa: S608
_USER_EXISTS = "SELECT EXISTS (SELECT FROM users WHERE id = $1)"
# Where an account's failed logins came from, and which accounts failed from an address,
# within the window: the pair buckets (hashed, so not searchable) to clear with them.
# login_failed events of an unknown email carry no user: nothing to clear for those.
_FAILED_LOGIN_ADDRESSES = """
SELECT DISTINCT ip_address FROM audit_events
WHERE user_id = $1 AND event = 'login_failed' AND occurred_at >= $2 AND ip_address <> ''
"""
_FAILED_LOGIN_EMAILS = """
SELECT DISTINCT u.email FROM audit_events a JOIN users u ON u.id = a.user_id
WHERE a.ip_address = $1 AND a.event = 'login_failed' AND a.occurred_at >= $2
"""
# A filter given as NULL is off. Run with a custom plan (see _list_audit), so the NULL
# tests fold away and each combination gets the index it needs.
_LIST_AUDIT = """
SELECT id, occurred_at, event, user_id, session_id, ip_address, user_agent, detail
FROM audit_events
WHERE ($2::uuid IS NULL OR user_id = $2)
  AND ($3::text[] IS NULL OR event = ANY($3))
  AND ($4::timestamptz IS NULL OR occurred_at >= $4)
  AND ($5::timestamptz IS NULL OR occurred_at < $5)
  AND ($6::bigint IS NULL OR id < $6)
ORDER BY id DESC LIMIT $1
"""
# A statement's generic plan keeps every `$n IS NULL` branch: measured on 100k events, it
# walks ids backwards and reads 51k rows for one user's page. PostgreSQL's `auto` mode
# kept custom plans in every run tried, but promises nothing: ask for them.
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


def _account(row: asyncpg.Record) -> Account:
    return Account(
        id=UserId(row["id"]),
        email=row["email"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        live_session_count=row["live_session_count"],
        second_factor_required=row["second_factor_required"],
        factor_kinds=tuple(FactorKind(kind) for kind in row["factor_kinds"]),
    )


async def fetch_account(conn: Connection, user_id: UserId, *, now: datetime) -> Account | None:
    """The account with its live sessions counted at `now`, on `conn` (inside the caller's
    transaction, if any); None if there is none."""
    row = await conn.fetchrow(_ACCOUNT_BY_ID, user_id, now)
    return None if row is None else _account(row)


def _record(row: asyncpg.Record) -> AuditRecord:
    return AuditRecord(id=row["id"], event=event_of(row))


class PgAdminStore:
    """domain.admin.AdminStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def view_account(
        self,
        *,
        user_id: UserId | None = None,
        email: str | None = None,
        now: datetime,
        event: AuditEvent,
    ) -> Account | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if user_id is None and email is not None:
                user_id = await owner_of_email(conn, email)
            account = None if user_id is None else await fetch_account(conn, user_id, now=now)
            await insert_event(
                conn,
                replace(
                    event,
                    user_id=None if account is None else account.id,
                    detail={**event.detail, "found": account is not None},
                ),
            )
        return account

    async def list_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        limit: int,
        after: tuple[datetime, SessionId] | None,
        event: AuditEvent,
    ) -> SessionPage | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(_USER_EXISTS, user_id):
                return None
            page = await fetch_live_page(conn, user_id, now=now, limit=limit, after=after)
            await insert_event(
                conn,
                replace(event, detail={**event.detail, "listed_count": len(page.sessions)}),
            )
        return page

    async def view_session(self, session_id: SessionId, *, event: AuditEvent) -> Session | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            session = await fetch_session(conn, session_id)
            await insert_event(
                conn,
                replace(
                    event,
                    user_id=None if session is None else session.user_id,
                    detail={**event.detail, "found": session is not None},
                ),
            )
        return session

    async def user_exists(self, user_id: UserId) -> bool:
        async with translate_errors():
            return bool(await self._pool.fetchval(_USER_EXISTS, user_id))

    async def user_by_email(self, email: str) -> UserId | None:
        async with translate_errors(), self._pool.acquire() as conn:
            return await owner_of_email(conn, email)

    async def failed_login_addresses(self, user_id: UserId, *, since: datetime) -> list[str]:
        async with translate_errors():
            rows = await self._pool.fetch(_FAILED_LOGIN_ADDRESSES, user_id, since)
        return [row["ip_address"] for row in rows]

    async def failed_login_emails(self, ip_address: str, *, since: datetime) -> list[str]:
        async with translate_errors():
            rows = await self._pool.fetch(_FAILED_LOGIN_EMAILS, ip_address, since)
        return [row["email"] for row in rows]

    async def clear_login_failures(self, buckets: list[str], *, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await forgive_failures(conn, buckets)
            await insert_event(conn, event)

    async def list_audit_events(
        self, which: AuditFilter, *, limit: int, before_id: int | None, event: AuditEvent
    ) -> AuditPage:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            page = await _list_audit(conn, which, limit=limit, before_id=before_id)
            # After the read: the listing does not show its own event.
            await insert_event(
                conn, replace(event, detail={**event.detail, "listed_count": len(page.events)})
            )
        return page


async def _list_audit(
    conn: Connection, which: AuditFilter, *, limit: int, before_id: int | None
) -> AuditPage:
    await conn.execute(_CUSTOM_PLANS)
    rows = await conn.fetch(
        _LIST_AUDIT,
        limit + 1,
        which.user_id,
        list(which.event_types) or None,
        which.occurred_after,
        which.occurred_before,
        before_id,
    )
    events = [_record(row) for row in rows[:limit]]
    return AuditPage(events=events, next_cursor=events[-1].id if len(rows) > limit else None)
