"""SQL for accounts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from authsvc.core.errors import EmailTaken
from authsvc.core.models import AuditEvent, User, UserId
from authsvc.store.audit import event_args, insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection, Pool, session_advisory_lock

__all__ = ["CanonicalizedEmails", "PgUserStore", "canonicalize_queued_emails", "insert_user"]

_log = logging.getLogger(__name__)

# Arbitrary constant shared by every replica: "authsvc canonical emails" (migration 0012).
_CANONICALIZE_LOCK_KEY = 0x61757468_0012
_CANONICALIZE_BATCH = 500

_INSERT_USER = """
INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $5)
"""
# Register's one statement for a free and a taken email alike: the insert does nothing on
# a taken email, and the audit row names whichever account now holds it. ($6.. = event.)
_INSERT_USER_IF_NEW = """
WITH inserted AS (
    INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $5)
    ON CONFLICT (email) DO NOTHING
    RETURNING id
)
INSERT INTO audit_events (occurred_at, event, user_id, session_id, ip_address, user_agent, detail)
SELECT $6,
       CASE WHEN i.id IS NULL THEN $13 ELSE $7 END,
       CASE WHEN i.id IS NULL THEN (SELECT id FROM users WHERE email = $2) ELSE $8 END,
       $9, $10, $11, $12
FROM (SELECT 1) AS one LEFT JOIN inserted AS i ON true
RETURNING event = $7 AS created
"""
_SELECT_BY_EMAIL = """
SELECT id, email, display_name, password_hash, created_at, disabled_at
FROM users WHERE email = $1
"""
_SELECT_BY_ID = """
SELECT id, email, display_name, password_hash, created_at, disabled_at
FROM users WHERE id = $1
"""
# Only over the hash the caller verified: a password changed meanwhile is not reverted.
_UPDATE_PASSWORD_HASH = """
UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1 AND password_hash = $4
"""
# Oldest account first, so of two legacy spellings of one address the earlier one gets it.
_NEXT_QUEUED_EMAILS = """
SELECT q.user_id, u.email
FROM email_canonicalization_queue AS q LEFT JOIN users AS u ON u.id = q.user_id
ORDER BY u.created_at NULLS FIRST, q.user_id LIMIT $1
"""
_SET_EMAIL = "UPDATE users SET email = $2, updated_at = $3 WHERE id = $1"
_OWNER_OF_EMAIL = "SELECT id FROM users WHERE email = $1"
_DEQUEUE = "DELETE FROM email_canonicalization_queue WHERE user_id = $1"


async def insert_user(conn: Connection, user: User) -> None:
    """Insert on `conn` (inside the caller's transaction, if any); EmailTaken if in use."""
    try:
        await conn.execute(
            _INSERT_USER,
            user.id,
            user.email,
            user.display_name,
            user.password_hash,
            user.created_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise EmailTaken("an account with this email already exists") from exc


def _user(row: asyncpg.Record) -> User:
    return User(
        id=UserId(row["id"]),
        email=row["email"],
        display_name=row["display_name"],
        password_hash=row["password_hash"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


class PgUserStore:
    """domain.sessions.UserStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_user(self, user: User, *, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            await insert_user(conn, user)
            await insert_event(conn, event)

    async def create_user_if_new(
        self, user: User, *, registered: AuditEvent, taken: AuditEvent
    ) -> bool:
        async with translate_errors():
            created: bool = await self._pool.fetchval(
                _INSERT_USER_IF_NEW,
                user.id,
                user.email,
                user.display_name,
                user.password_hash,
                user.created_at,
                *event_args(registered),
                taken.event,
            )
        return created

    async def find_by_email(self, email: str) -> User | None:
        async with translate_errors():
            row = await self._pool.fetchrow(_SELECT_BY_EMAIL, email)
        return None if row is None else _user(row)

    async def find_by_id(self, user_id: UserId) -> User | None:
        async with translate_errors():
            row = await self._pool.fetchrow(_SELECT_BY_ID, user_id)
        return None if row is None else _user(row)

    async def update_password_hash(
        self, user_id: UserId, password_hash: str, now: datetime, *, replacing: str
    ) -> bool:
        async with translate_errors():
            updated = await self._pool.execute(
                _UPDATE_PASSWORD_HASH, user_id, password_hash, now, replacing
            )
        return bool(updated == "UPDATE 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class CanonicalizedEmails:
    """What one pass over the queue of migration 0012 did, in accounts."""

    rewritten: int = 0
    # Kept their old form: another account holds the canonical one (audited, for the operator).
    collided: int = 0
    # Kept their old form: it has no canonical form (an invalid or mixed-script address).
    uncanonical: int = 0


async def canonicalize_queued_emails(
    pool: Pool, canonical: Callable[[str], str | None], now: datetime
) -> CanonicalizedEmails:
    """Rewrite each queued account's email into `canonical(email)`, oldest account first.

    Nothing is merged or deleted: an account whose canonical email another account already
    holds keeps its old email (so Login, which looks up the canonical form, reaches the other
    one), and an `email_canonical_collision` audit event names both for the operator. An email
    with no canonical form (`canonical` returns None) keeps its form too, with an
    `email_not_canonical` event.
    Replicas queue on one advisory lock; an empty queue costs one query.
    """
    rewritten = collided = uncanonical = 0
    async with translate_errors(), session_advisory_lock(pool, _CANONICALIZE_LOCK_KEY) as conn:
        while rows := await conn.fetch(_NEXT_QUEUED_EMAILS, _CANONICALIZE_BATCH):
            for row in rows:
                outcome = await _canonicalize_one(
                    conn, UserId(row["user_id"]), row["email"], canonical, now
                )
                rewritten += outcome == "rewritten"
                collided += outcome == "collided"
                uncanonical += outcome == "uncanonical"
    report = CanonicalizedEmails(rewritten=rewritten, collided=collided, uncanonical=uncanonical)
    if rewritten or collided or uncanonical:
        _log.info(
            "emails canonicalized",
            extra={
                "event": "emails_canonicalized",
                "rewritten": rewritten,
                "collided": collided,
                "uncanonical": uncanonical,
            },
        )
    return report


async def _canonicalize_one(
    conn: Connection,
    user_id: UserId,
    email: str | None,
    canonical: Callable[[str], str | None],
    now: datetime,
) -> str:
    wanted = None if email is None else canonical(email)
    async with conn.transaction():
        await conn.execute(_DEQUEUE, user_id)
        if email is None or wanted == email:
            return "unchanged"
        if wanted is None:
            await _audit_kept(conn, user_id, now, "email_not_canonical", {})
            return "uncanonical"
        try:
            async with conn.transaction():
                await conn.execute(_SET_EMAIL, user_id, wanted, now)
        except asyncpg.UniqueViolationError:
            owner = await conn.fetchval(_OWNER_OF_EMAIL, wanted)
            await _audit_kept(
                conn, user_id, now, "email_canonical_collision", {"canonical_owner": str(owner)}
            )
            return "collided"
    return "rewritten"


async def _audit_kept(
    conn: Connection, user_id: UserId, now: datetime, event: str, detail: dict[str, str]
) -> None:
    _log.warning(
        "email kept in its legacy form",
        extra={"event": event, "user_id": str(user_id), **detail},
    )
    await insert_event(
        conn,
        AuditEvent(
            event=event,
            occurred_at=now,
            user_id=user_id,
            detail={"kept": "legacy_email", **detail},
        ),
    )
