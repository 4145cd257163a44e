"""SQL for sessions and refresh tokens.

Locking rule: every change to a session or to its refresh tokens happens while
holding that session's row lock (UPDATE or SELECT ... FOR UPDATE on sessions),
taken before any token row is touched. Rotation, revocation, logout and the
sweeper therefore serialise per session in one order and cannot deadlock, and a
refresh that races a revocation either commits first (and its tokens die with
the session) or sees the revocation.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from authsvc.core.errors import InvalidCredentials, UserDisabled
from authsvc.core.factors import Assurance
from authsvc.core.lineage import LineageStep
from authsvc.core.models import (
    AuditEvent,
    DeviceInfo,
    DeviceType,
    EndedSession,
    ListedSession,
    RefreshTokenRecord,
    RequestOrigin,
    RotationAttempt,
    Session,
    SessionEnder,
    SessionEnderKind,
    SessionEndReason,
    SessionId,
    SessionPage,
    User,
    UserId,
)
from authsvc.core.session_limits import SessionCap
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection
from authsvc.store.revocations import append_revocations
from authsvc.store.session_limits import enforce_cap
from authsvc.store.users import insert_user

__all__ = [
    "PgLockedSession",
    "PgSessionStore",
    "end_user_sessions",
    "ender_args",
    "fetch_live_page",
    "fetch_own_session",
    "fetch_session",
    "listed_session",
]


# Only for an account not disabled and whose password hash is still the one the sign-in
# verified, read under its key-share lock (the lock the foreign key takes anyway): a
# DisableUser, ChangePassword or ResetPassword in flight holds FOR UPDATE, so this waits
# for it and then sees its change (store/accounts.py's locking rule). Inserts nothing
# otherwise.
_INSERT_SESSION = """
INSERT INTO sessions (
    id, user_id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name, country, city,
    signing_key_id, aal, auth_methods, auth_method_times
)
SELECT $1, id, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $14, $15, $16, $17, $18, $19
FROM users WHERE id = $2 AND disabled_at IS NULL AND password_hash = $13
FOR KEY SHARE
"""
# Why _INSERT_SESSION inserted nothing: true, disabled; false, the password changed;
# no row, the account is gone.
_ACCOUNT_DISABLED = "SELECT disabled_at IS NOT NULL FROM users WHERE id = $1"
_INSERT_TOKEN = """
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
VALUES ($1, $2, $3, $4, $5, $6)
"""
# A legacy refresh token's user (one issued before its prefix named them): by hash alone,
# the one lookup not routed by user (on Citus, every shard, each through its index).
_TOKEN_OWNER = "SELECT user_id FROM refresh_tokens WHERE token_hash = $1"
# The token's session_id never changes, so the sub-select is safe to evaluate
# before the lock; the lock then waits out any rotation in flight. Every statement on a
# session or its tokens names the user ($2 here): its routing key (migration 0025).
_LOCK_SESSION_BY_TOKEN = """
SELECT
    id, user_id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name, country, city,
    revoked_at, revoke_reason, end_reason, ended_by_kind, ended_by_session, ended_by_operator,
    aal, auth_methods, auth_method_times
FROM sessions
WHERE user_id = $2
  AND id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2)
FOR UPDATE
"""
# A new statement after the lock, so it sees the latest committed token state.
_SELECT_TOKEN = """
SELECT
    id, session_id, token_hash, created_at, expires_at, rotated_at, successor_box,
    idempotency_key_hash
FROM refresh_tokens WHERE token_hash = $1 AND user_id = $3 AND session_id = $2
"""
# A token rotated with an idempotency key ($8) stays on record as long as its successor
# could be current (domain/idempotent_refresh.py): its expiry becomes the successor's.
_ROTATE = """
WITH touched AS (
    UPDATE sessions SET last_active_at = $2, idle_expires_at = $3, signing_key_id = $8
    WHERE user_id = $10 AND id = $1
), consumed AS (
    UPDATE refresh_tokens SET
        rotated_at = $2, successor_box = $5, idempotency_key_hash = $9,
        expires_at = CASE WHEN $9::bytea IS NULL THEN expires_at ELSE GREATEST(expires_at, $3) END
    WHERE user_id = $10 AND id = $4
)
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at, user_id)
VALUES ($6, $1, $7, $2, $3, $10)
"""
# The common case of Refresh in one call (one round trip, no BEGIN/COMMIT), a function of
# migration 0027 so that Citus delegates it whole to the user's worker (the migration says
# why). $3 is the idle deadline a rotation slides to (now + idle timeout).
_ROTATE_IF_CURRENT = """
SELECT rotated_session_id AS id, owner_id AS user_id, slid_idle_expires_at AS idle_expires_at,
    session_aal AS aal, session_auth_methods AS auth_methods,
    session_auth_method_times AS auth_method_times, session_created_at AS created_at
FROM refresh_token_rotate($12, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""
# Refresh lineage's step for the paths that hold the session's lock (grace, reuse).
_RECORD_STEP = """
INSERT INTO refresh_lineage (session_id, presented_token_id, successor_token_id,
    presented_at, ip_address, user_agent, outcome, within_grace, user_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
# What rotate_if_current records for its caller with lineage off (the row is not written).
_NOT_RECORDED = RequestOrigin()
# Every ending sets end_reason (append_revocations logs it for the revocation feed) and
# who ended it (migration 0018).
_REVOKE_LOCKED = """
UPDATE sessions SET revoked_at = $2, revoke_reason = $3, end_reason = $4,
    ended_by_kind = $5, ended_by_session = $6, ended_by_operator = $7
WHERE user_id = $8 AND id = $1 AND revoked_at IS NULL
"""
_SELECT_SESSION = """
SELECT
    id, user_id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name, country, city,
    revoked_at, revoke_reason, end_reason, ended_by_kind, ended_by_session, ended_by_operator,
    aal, auth_methods, auth_method_times
FROM sessions WHERE id = $1
"""
# The same, routed: the session only if it is this user's ($2).
_SELECT_OWN_SESSION = _SELECT_SESSION.replace("WHERE id = $1", "WHERE user_id = $2 AND id = $1")
# A step-up: the session's level and methods, while it is live.
_RECORD_ASSURANCE = """
UPDATE sessions SET aal = $3, auth_methods = $4, auth_method_times = $5
WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL AND idle_expires_at > $6
"""
# Whoever's it is: not routed, only after the routed read found nothing.
_SESSION_EXISTS = "SELECT true FROM sessions WHERE id = $1"
# Only the columns ListedSession shows (in its order): each column more is decoded
# twenty times a page.
_LIST_LIVE_FIRST_PAGE = """
SELECT
    id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name, country, city,
    aal, auth_methods, auth_method_times
FROM sessions
WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
ORDER BY last_active_at DESC, id DESC
LIMIT $3
"""
_LIST_LIVE_AFTER = """
SELECT
    id, created_at, last_active_at, idle_expires_at, expires_at, remember_me,
    user_agent, ip_address, device_type, browser, os, device_name, country, city,
    aal, auth_methods, auth_method_times
FROM sessions
WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
  AND (last_active_at, id) < ($4, $5)
ORDER BY last_active_at DESC, id DESC
LIMIT $3
"""
# Revocations append their audit events in the same statement ($5.. = event, ip,
# user agent, detail), one per session they revoke. An expired session keeps its expiry
# as its ending, marked by the sweeper or not (domain/tombstones.py).
_REVOKE_OWN = """
WITH revoked AS (
    UPDATE sessions SET revoked_at = $3, revoke_reason = $4, end_reason = $9,
        ended_by_kind = $10, ended_by_session = $11, ended_by_operator = $12
    WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND idle_expires_at > $3
    RETURNING id, user_id, created_at
), audited AS (
    INSERT INTO audit_events
        (occurred_at, event, user_id, session_id, ip_address, user_agent, detail)
    SELECT $3, $5, user_id, id, $6, $7, $8 FROM revoked
)
SELECT created_at FROM revoked
"""
_OWN_SESSION_EXISTS = "SELECT true FROM sessions WHERE id = $1 AND user_id = $2"
_REVOKE_ALL_OF_USER = """
WITH revoked AS (
    UPDATE sessions SET revoked_at = $2, revoke_reason = $3, end_reason = $9,
        ended_by_kind = $10, ended_by_session = $11, ended_by_operator = $12
    WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
      AND id IS DISTINCT FROM $4
    RETURNING id, user_id, created_at
), audited AS (
    INSERT INTO audit_events
        (occurred_at, event, user_id, session_id, ip_address, user_agent, detail)
    SELECT $2, $5, user_id, id, $6, $7, $8 FROM revoked
)
SELECT id, created_at FROM revoked
"""
# Ends the user's live sessions but $5 ($4 = end reason, $11.. = who ended them) and
# appends one audit event for the whole call ($6.. = event, session, ip, user agent,
# detail), with what it ended, even if nothing was live: an aggregate without GROUP BY
# yields one row.
_END_USER_SESSIONS = """
WITH ended AS (
    UPDATE sessions SET revoked_at = $2, revoke_reason = $3, end_reason = $4,
        ended_by_kind = $11, ended_by_session = $12, ended_by_operator = $13
    WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
      AND id IS DISTINCT FROM $5
    RETURNING id, created_at
), audited AS (
    INSERT INTO audit_events
        (occurred_at, event, user_id, session_id, ip_address, user_agent, detail)
    SELECT $2, $6, $1, $7, $8, $9, $10::jsonb || jsonb_build_object(
        'revoked_session_count', count(*),
        'revoked_session_ids', coalesce(jsonb_agg(id), '[]'::jsonb))
    FROM ended
)
SELECT id, created_at FROM ended
"""


async def end_user_sessions(
    conn: Connection,
    user_id: UserId,
    *,
    now: datetime,
    revoke_reason: str,
    ended_by: SessionEndReason,
    ender: SessionEnder,
    event: AuditEvent,
    keep: SessionId | None,
) -> list[EndedSession]:
    """`SessionStore.end_user_sessions` on `conn`, inside the caller's transaction (which
    the revocation log's append then holds until it commits). Sessions a transaction
    committed before this statement started are seen, so a caller that first locks the
    user row ends every session created before it took the lock."""
    rows = await conn.fetch(
        _END_USER_SESSIONS,
        user_id,
        now,
        revoke_reason,
        ended_by.value,
        keep,
        event.event,
        event.session_id,
        event.origin.ip_address,
        event.origin.user_agent,
        event.detail,
        *ender_args(ender),
    )
    ended = [_ended(row) for row in rows]
    await append_revocations(
        conn, [(session.id, user_id) for session in ended], reason=ended_by, revoked_at=now
    )
    return ended


async def fetch_live_page(
    db: asyncpg.Pool | Connection,
    user_id: UserId,
    *,
    now: datetime,
    limit: int,
    after: tuple[datetime, SessionId] | None,
) -> SessionPage:
    """`SessionStore.list_live_sessions` on a pool, or on a connection inside the caller's
    transaction (AdminService's, which audits the listing)."""
    if after is None:
        rows = await db.fetch(_LIST_LIVE_FIRST_PAGE, user_id, now, limit + 1)
    else:
        rows = await db.fetch(_LIST_LIVE_AFTER, user_id, now, limit + 1, after[0], after[1])
    sessions = [listed_session(row) for row in rows[:limit]]
    has_more = len(rows) > limit
    last = sessions[-1] if has_more else None
    return SessionPage(
        sessions=sessions,
        next_cursor=None if last is None else (last.last_active_at, last.id),
    )


# By value without Enum's call machinery: twenty rows a listing.
_DEVICE_TYPES = {device_type.value: device_type for device_type in DeviceType}
_END_REASONS = {reason.value: reason for reason in SessionEndReason}
_ENDER_KINDS = {kind.value: kind for kind in SessionEnderKind}


def ender_args(ender: SessionEnder) -> tuple[str, SessionId | None, str | None]:
    """The ended_by_kind, ended_by_session and ended_by_operator values of `ender`."""
    return ender.kind.value, ender.session_id, ender.operator or None


def _ender(row: asyncpg.Record) -> SessionEnder | None:
    kind = row["ended_by_kind"]
    if kind is None:
        return None
    session = row["ended_by_session"]
    return SessionEnder(
        kind=_ENDER_KINDS[kind],
        session_id=None if session is None else SessionId(session),
        operator=row["ended_by_operator"] or "",
    )


def _ended(row: asyncpg.Record) -> EndedSession:
    return EndedSession(id=SessionId(row["id"]), created_at=row["created_at"])


async def fetch_session(db: asyncpg.Pool | Connection, session_id: SessionId) -> Session | None:
    """A session by its id alone, whoever's it is, on a pool or on a connection inside the
    caller's transaction (AdminService's, which audits the read): one lookup of the id
    index, not routed by user (on Citus, every shard)."""
    row = await db.fetchrow(_SELECT_SESSION, session_id)
    return None if row is None else session_of(row)


async def fetch_own_session(
    db: asyncpg.Pool | Connection, user_id: UserId, session_id: SessionId
) -> Session | None:
    """`SessionStore.get_session`: one primary-key lookup, routed by the user."""
    row = await db.fetchrow(_SELECT_OWN_SESSION, session_id, user_id)
    return None if row is None else session_of(row)


def session_of(row: asyncpg.Record) -> Session:
    """A session from a row of every column `_SELECT_SESSION` reads."""
    end_reason = row["end_reason"]
    return Session(
        id=SessionId(row["id"]),
        user_id=UserId(row["user_id"]),
        created_at=row["created_at"],
        last_active_at=row["last_active_at"],
        idle_expires_at=row["idle_expires_at"],
        expires_at=row["expires_at"],
        remember_me=row["remember_me"],
        device=DeviceInfo(
            user_agent=row["user_agent"],
            ip_address=row["ip_address"],
            device_type=_DEVICE_TYPES[row["device_type"]],
            browser=row["browser"],
            os=row["os"],
            device_name=row["device_name"],
            country=row["country"],
            city=row["city"],
        ),
        revoked_at=row["revoked_at"],
        revoke_reason=row["revoke_reason"],
        end_reason=None if end_reason is None else _END_REASONS[end_reason],
        ended_by=_ender(row),
        assurance=Assurance.stored(
            row["aal"], row["auth_methods"], row["auth_method_times"], row["created_at"]
        ),
    )


def listed_session(row: Iterable[Any]) -> ListedSession:
    """A row of ListedSession's columns, in its order."""
    # Unpacked by position (the select's order), not looked up by name per column.
    (id_, created, active, idle_expires, expires, remember, agent, ip, device_type, *rest) = row
    browser, os, device_name, country, city, aal, methods, method_times = rest
    return ListedSession(
        SessionId(id_),
        created,
        active,
        idle_expires,
        expires,
        remember,
        agent,
        ip,
        _DEVICE_TYPES[device_type],
        browser,
        os,
        device_name,
        country,
        city,
        Assurance.stored(aal, methods, method_times, created),
    )


def _token(row: asyncpg.Record) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        id=row["id"],
        session_id=SessionId(row["session_id"]),
        token_hash=bytes(row["token_hash"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        rotated_at=row["rotated_at"],
        successor_box=None if row["successor_box"] is None else bytes(row["successor_box"]),
        idempotency_key_hash=(
            None if row["idempotency_key_hash"] is None else bytes(row["idempotency_key_hash"])
        ),
    )


def _event_template(event: AuditEvent) -> tuple[object, ...]:
    """The per-statement parts of an event stamped on each revoked session."""
    return (event.event, event.origin.ip_address, event.origin.user_agent, event.detail)


class PgLockedSession:
    """domain.sessions.LockedSession on the locking transaction's connection."""

    __slots__ = ("_conn", "session")

    def __init__(self, conn: Connection, session: Session) -> None:
        self._conn = conn
        self.session = session

    async def find_token(self, token_hash: bytes) -> RefreshTokenRecord | None:
        session = self.session
        row = await self._conn.fetchrow(_SELECT_TOKEN, token_hash, session.id, session.user_id)
        return None if row is None else _token(row)

    async def rotate(
        self,
        *,
        consumed: RefreshTokenRecord,
        successor_box: bytes,
        successor_hash: bytes,
        now: datetime,
        idle_expires_at: datetime,
        signing_key_id: str,
        idempotency_key_hash: bytes | None = None,
    ) -> uuid.UUID:
        # One statement: consume, slide, store the successor.
        successor_id = uuid.uuid4()
        await self._conn.execute(
            _ROTATE,
            self.session.id,
            now,
            idle_expires_at,
            consumed.id,
            successor_box,
            successor_id,
            successor_hash,
            signing_key_id,
            idempotency_key_hash,
            self.session.user_id,
        )
        return successor_id

    async def record_presentation(self, step: LineageStep) -> None:
        origin = step.origin
        await self._conn.execute(
            _RECORD_STEP,
            self.session.id,
            step.token_id,
            step.successor_token_id,
            step.presented_at,
            origin.ip_address,
            origin.user_agent,
            step.outcome.value,
            step.within_grace,
            self.session.user_id,
        )

    async def revoke(
        self,
        *,
        now: datetime,
        reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
    ) -> None:
        status = await self._conn.execute(
            _REVOKE_LOCKED,
            self.session.id,
            now,
            reason,
            ended_by.value,
            *ender_args(ender),
            self.session.user_id,
        )
        if status == "UPDATE 1":
            ending = (self.session.id, self.session.user_id)
            await append_revocations(self._conn, [ending], reason=ended_by, revoked_at=now)
        await insert_event(self._conn, event)


class PgSessionStore:
    """domain.sessions.SessionStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_session(
        self,
        session: Session,
        *,
        token_hash: bytes,
        event: AuditEvent,
        new_user: User | None = None,
        verified_hash: str,
        signing_key_id: str,
        cap: SessionCap | None = None,
    ) -> list[EndedSession]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if new_user is not None:
                await insert_user(conn, new_user)
            evicted = []
            if cap is not None:
                evicted = await enforce_cap(
                    conn,
                    session.user_id,
                    cap=cap,
                    now=session.created_at,
                    verified_hash=verified_hash,
                )
            device = session.device
            assurance = session.proven
            inserted = await conn.execute(
                _INSERT_SESSION,
                session.id,
                session.user_id,
                session.created_at,
                session.idle_expires_at,
                session.expires_at,
                session.remember_me,
                device.user_agent,
                device.ip_address,
                device.device_type.value,
                device.browser,
                device.os,
                device.device_name,
                verified_hash,
                device.country,
                device.city,
                signing_key_id,
                assurance.level.value,
                [method.method for method in assurance.methods],
                [method.verified_at for method in assurance.methods],
            )
            if inserted == "INSERT 0 0":
                if await conn.fetchval(_ACCOUNT_DISABLED, session.user_id):
                    raise UserDisabled("the account is disabled")
                raise InvalidCredentials("invalid email or password")
            await conn.execute(
                _INSERT_TOKEN,
                uuid.uuid4(),
                session.id,
                token_hash,
                session.created_at,
                session.idle_expires_at,
                session.user_id,
            )
            await insert_event(conn, event)
        return evicted

    async def find_token_owner(self, token_hash: bytes) -> UserId | None:
        async with translate_errors():
            owner = await self._pool.fetchval(_TOKEN_OWNER, token_hash)
        return None if owner is None else UserId(owner)

    async def rotate_if_current(
        self,
        user_id: UserId,
        token_hash: bytes,
        *,
        successor_box: bytes,
        successor_hash: bytes,
        now: datetime,
        idle_timeout: timedelta,
        signing_key_id: str,
        lineage: RequestOrigin | None,
        idempotency_key_hash: bytes | None = None,
    ) -> RotationAttempt | None:
        recorded = _NOT_RECORDED if lineage is None else lineage
        async with translate_errors():
            row = await self._pool.fetchrow(
                _ROTATE_IF_CURRENT,
                token_hash,
                now,
                now + idle_timeout,
                successor_box,
                uuid.uuid4(),
                successor_hash,
                signing_key_id,
                recorded.ip_address,
                recorded.user_agent,
                lineage is not None,
                idempotency_key_hash,
                user_id,
            )
        if row is None:
            return None
        return RotationAttempt(
            session_id=SessionId(row["id"]),
            user_id=UserId(row["user_id"]),
            idle_expires_at=row["idle_expires_at"],
            assurance=Assurance.stored(
                row["aal"], row["auth_methods"], row["auth_method_times"], row["created_at"]
            ),
        )

    async def record_assurance(
        self, user_id: UserId, session_id: SessionId, assurance: Assurance, *, now: datetime
    ) -> bool:
        async with translate_errors():
            updated = await self._pool.execute(
                _RECORD_ASSURANCE,
                user_id,
                session_id,
                assurance.level.value,
                [method.method for method in assurance.methods],
                [method.verified_at for method in assurance.methods],
                now,
            )
        return updated == "UPDATE 1"

    @asynccontextmanager
    async def lock_session_by_token(
        self, user_id: UserId, token_hash: bytes
    ) -> AsyncIterator[PgLockedSession | None]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_SESSION_BY_TOKEN, token_hash, user_id)
            yield None if row is None else PgLockedSession(conn, session_of(row))

    async def get_session(self, user_id: UserId, session_id: SessionId) -> Session | None:
        async with translate_errors():
            return await fetch_own_session(self._pool, user_id, session_id)

    async def session_exists(self, session_id: SessionId) -> bool:
        async with translate_errors():
            return bool(await self._pool.fetchval(_SESSION_EXISTS, session_id))

    async def list_live_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        limit: int,
        after: tuple[datetime, SessionId] | None,
    ) -> SessionPage:
        async with translate_errors():
            return await fetch_live_page(self._pool, user_id, now=now, limit=limit, after=after)

    async def revoke_session(
        self,
        user_id: UserId,
        session_id: SessionId,
        *,
        now: datetime,
        reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
    ) -> EndedSession | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            created_at = await conn.fetchval(
                _REVOKE_OWN,
                session_id,
                user_id,
                now,
                reason,
                *_event_template(event),
                ended_by.value,
                *ender_args(ender),
            )
            if created_at is not None:
                await append_revocations(
                    conn, [(session_id, user_id)], reason=ended_by, revoked_at=now
                )
        return None if created_at is None else EndedSession(id=session_id, created_at=created_at)

    async def session_belongs_to(self, user_id: UserId, session_id: SessionId) -> bool:
        async with translate_errors():
            return bool(await self._pool.fetchval(_OWN_SESSION_EXISTS, session_id, user_id))

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                _REVOKE_ALL_OF_USER,
                user_id,
                now,
                reason,
                keep,
                *_event_template(event),
                ended_by.value,
                *ender_args(ender),
            )
            ended = [_ended(row) for row in rows]
            await append_revocations(
                conn, [(session.id, user_id) for session in ended], reason=ended_by, revoked_at=now
            )
        return ended

    async def end_user_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        revoke_reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            return await end_user_sessions(
                conn,
                user_id,
                now=now,
                revoke_reason=revoke_reason,
                ended_by=ended_by,
                ender=ender,
                event=event,
                keep=keep,
            )
