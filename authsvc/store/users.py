"""SQL for accounts."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from authsvc.core.errors import EmailTaken
from authsvc.core.models import User, UserId
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection

__all__ = ["PgUserStore", "insert_user"]

_INSERT_USER = """
INSERT INTO users (id, email, display_name, password_hash, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $5)
"""
_SELECT_BY_EMAIL = """
SELECT id, email, display_name, password_hash, created_at FROM users WHERE email = $1
"""
_UPDATE_PASSWORD_HASH = """
UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1
"""


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
    )


class PgUserStore:
    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create_user(self, user: User) -> None:
        """Insert a new account; an email already in use is EmailTaken."""
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_user(conn, user)

    async def find_by_email(self, email: str) -> User | None:
        async with translate_errors():
            row = await self._pool.fetchrow(_SELECT_BY_EMAIL, email)
        return None if row is None else _user(row)

    async def update_password_hash(
        self, user_id: UserId, password_hash: str, now: datetime
    ) -> None:
        async with translate_errors():
            await self._pool.execute(_UPDATE_PASSWORD_HASH, user_id, password_hash, now)
