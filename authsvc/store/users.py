"""SQL for accounts."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from authsvc.core.errors import EmailTaken
from authsvc.core.models import AuditEvent, User, UserId
from authsvc.store.audit import insert_event
from authsvc.store.emails import claim_email, owner_of_email, release_email
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection, Pool, session_advisory_lock

__all__ = ["CanonicalizedEmails", "PgUserStore", "canonicalize_queued_emails", "insert_user"]

_log = logging.getLogger(__name__)

# Arbitrary constant shared by every replica: "authsvc canonical emails" (migration 0012).
_CANONICALIZE_LOCK_KEY = 0x61757468_0012
_CANONICALIZE_BATCH = 500

# After the account has claimed its email (store/emails.py), in the same transaction.
_INSERT_USER = """
INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $5)
"""
_SELECT_BY_ID = """
SELECT id, email, display_name, password_hash, created_at, disabled_at, second_factor_required
FROM users WHERE id = $1
"""
# No account has it (ids are random, version 4): an unknown email is still read by id.
_NO_USER = UserId(uuid.UUID(int=0))
# Only over the hash the caller verified: a password changed meanwhile is not reverted.
_UPDATE_PASSWORD_HASH = """
UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1 AND password_hash = $4
"""
# Oldest account first, so of two legacy spellings of one address the earlier one gets it.
_NEXT_QUEUED_EMAILS = """
SELECT q.user_id
FROM email_canonicalization_queue AS q LEFT JOIN users AS u ON u.id = q.user_id
ORDER BY u.created_at NULLS FIRST, q.user_id LIMIT $1
"""
# Read again under the account's row lock, which DeleteUser takes too: the email is not
# claimed for an account deleted since the batch was read.
_LOCK_EMAIL = "SELECT email FROM users WHERE id = $1 FOR UPDATE"
_SET_EMAIL = "UPDATE users SET email = $2, updated_at = $3 WHERE id = $1"
_DEQUEUE = "DELETE FROM email_canonicalization_queue WHERE user_id = $1"


async def insert_user(conn: Connection, user: User) -> None:
    """Claim the email and insert the account on `conn`, inside the caller's transaction
    (which a raise rolls back); EmailTaken, with nothing written, if the email is in use."""
    if not await claim_email(conn, user.email, user.id):
        raise EmailTaken("an account with this email already exists")
    await _insert_row(conn, user)


async def _insert_row(conn: Connection, user: User) -> None:
    await conn.execute(
        _INSERT_USER,
        user.id,
        user.email,
        user.display_name,
        user.password_hash,
        user.created_at,
    )


_USER_EMAIL = "SELECT email FROM users WHERE id = $1"


async def fetch_user_email(db: asyncpg.Pool | Connection, user_id: UserId) -> str | None:
    """The account's email; None if there is no such account."""
    email: str | None = await db.fetchval(_USER_EMAIL, user_id)
    return email


def _user(row: asyncpg.Record) -> User:
    return User(
        id=UserId(row["id"]),
        email=row["email"],
        display_name=row["display_name"],
        password_hash=row["password_hash"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        second_factor_required=row["second_factor_required"],
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
        # The same three statements for a free and a taken email: claim, then insert the
        # account or read who holds the email, then the audit row.
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await claim_email(conn, user.email, user.id):
                await _insert_row(conn, user)
                await insert_event(conn, registered)
                return True
            owner = await owner_of_email(conn, user.email)
            await insert_event(conn, replace(taken, user_id=owner))
        return False

    async def find_by_email(self, email: str) -> User | None:
        async with translate_errors(), self._pool.acquire() as conn:
            owner = await owner_of_email(conn, email)
            # Read for an unknown email too, so that Login costs the same two statements
            # whether or not the email has an account.
            row = await conn.fetchrow(_SELECT_BY_ID, _NO_USER if owner is None else owner)
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
                outcome = await _canonicalize_one(conn, UserId(row["user_id"]), canonical, now)
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
    canonical: Callable[[str], str | None],
    now: datetime,
) -> str:
    async with conn.transaction():
        await conn.execute(_DEQUEUE, user_id)
        email: str | None = await conn.fetchval(_LOCK_EMAIL, user_id)
        wanted = None if email is None else canonical(email)
        if email is None or wanted == email:
            return "unchanged"
        if wanted is None:
            await _audit_kept(conn, user_id, now, "email_not_canonical", {})
            return "uncanonical"
        if not await claim_email(conn, wanted, user_id):
            owner = await owner_of_email(conn, wanted)
            await _audit_kept(
                conn, user_id, now, "email_canonical_collision", {"canonical_owner": str(owner)}
            )
            return "collided"
        await release_email(conn, email, user_id)
        await conn.execute(_SET_EMAIL, user_id, wanted, now)
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
