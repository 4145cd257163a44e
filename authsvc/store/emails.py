"""SQL for the email lookup (migration 0026): which account holds an email.

An email is held by the row keyed by it in `user_emails`, the one place its uniqueness is
enforced; `users.email` repeats it for reading an account by id. Whoever changes an
account's email (Register, the canonicalisation of legacy emails, DeleteUser) writes both,
in one transaction. Lookups by email read this table in one statement and then the account
by id in another: on Citus the two tables live on different shards.
"""

from __future__ import annotations

from authsvc.core.models import UserId
from authsvc.store.pool import Connection

__all__ = ["claim_email", "owner_of_email", "release_email"]

# Nothing returned: another account holds the email. A claim in flight in another
# transaction is waited for, so of two concurrent claims exactly one returns a row.
_CLAIM = """
INSERT INTO user_emails (email, user_id) VALUES ($1, $2)
ON CONFLICT (email) DO NOTHING
RETURNING user_id
"""
_OWNER = "SELECT user_id FROM user_emails WHERE email = $1"
# Only the account's own claim: never another account's.
_RELEASE = "DELETE FROM user_emails WHERE email = $1 AND user_id = $2"


async def claim_email(conn: Connection, email: str, user_id: UserId) -> bool:
    """Make `email` the account's, on `conn` inside the caller's transaction. False, with
    nothing written, if another account holds it."""
    return await conn.fetchval(_CLAIM, email, user_id) is not None


async def owner_of_email(conn: Connection, email: str) -> UserId | None:
    """The account holding exactly `email`, as of this statement; None if none does."""
    found = await conn.fetchval(_OWNER, email)
    return None if found is None else UserId(found)


async def release_email(conn: Connection, email: str, user_id: UserId) -> None:
    """Free `email` if this account holds it, on `conn` inside the caller's transaction."""
    await conn.execute(_RELEASE, email, user_id)
