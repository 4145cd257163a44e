"""Seed users, sessions and refresh tokens straight into the service's tables
with COPY, and mint access tokens through the real Refresh RPC."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

import asyncpg
import grpc

from authsvc.core.models import UserId
from authsvc.domain.refresh_tokens import hash_refresh_token, new_refresh_token
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc

if TYPE_CHECKING:
    Stub: TypeAlias = auth_service_pb2_grpc.AuthServiceAsyncStub
else:
    Stub = auth_service_pb2_grpc.AuthServiceStub

__all__ = ["SeededSession", "Seeder"]

_LIFETIME = timedelta(days=7)  # within the default idle timeout and lifetime
_USER_COLUMNS = ("id", "email", "display_name", "password_hash", "created_at", "updated_at")
_SESSION_COLUMNS = (
    "id", "user_id", "created_at", "last_active_at", "idle_expires_at", "expires_at",
    "remember_me", "user_agent", "ip_address", "device_type", "browser", "os", "device_name",
)  # fmt: skip
_TOKEN_COLUMNS = ("id", "user_id", "session_id", "token_hash", "created_at", "expires_at")


@dataclass(slots=True, kw_only=True)
class SeededSession:
    user_id: uuid.UUID
    email: str
    session_id: uuid.UUID
    refresh_token: str
    access_token: str = ""


class Seeder:
    """Every call adds fresh rows (new ids and emails), so runs never share state."""

    __slots__ = ("_password_hash", "_pool", "_target")

    def __init__(self, pool: asyncpg.Pool, target: str, password_hash: str) -> None:
        self._pool = pool
        self._target = target
        self._password_hash = password_hash

    async def users_with_sessions(
        self, users: int, sessions_each: int
    ) -> list[list[SeededSession]]:
        """`users` new users (the bench password), each with `sessions_each` live sessions."""
        now = datetime.now(UTC)
        user_rows, session_rows, token_rows = [], [], []
        seeded: list[list[SeededSession]] = []
        for _ in range(users):
            user_id = uuid.uuid4()
            email = f"bench-{user_id.hex}@example.com"
            user_rows.append((user_id, email, "", self._password_hash, now, now))
            mine = []
            for _ in range(sessions_each):
                session_id = uuid.uuid4()
                # Routed by its user, as the service issues them (a legacy token's first
                # use would take the lookup by hash alone: multi-shard on Citus).
                token = new_refresh_token(UserId(user_id))
                session_rows.append(
                    (session_id, user_id, now, now, now + _LIFETIME, now + _LIFETIME, False,
                     "bench/1.0", "127.0.0.1", "other", "Other", "Other", "bench")
                )  # fmt: skip
                token_rows.append(
                    (uuid.uuid4(), user_id, session_id, hash_refresh_token(token), now,
                     now + _LIFETIME)
                )  # fmt: skip
                mine.append(
                    SeededSession(
                        user_id=user_id, email=email, session_id=session_id, refresh_token=token
                    )
                )
            seeded.append(mine)
        await self._copy(user_rows, session_rows, token_rows)
        return seeded

    async def background_sessions(self, total: int) -> None:
        """Grow the store to at least `total` sessions (10 per user, one refresh
        token each), in chunks, then ANALYZE so plans see the new size."""
        have = int(await self._pool.fetchval("SELECT count(*) FROM sessions"))
        await self._bulk(total - have, expired=False)

    async def expired_sessions(self, count: int) -> None:
        """`count` sessions whose idle and absolute deadlines are past: sweep work."""
        await self._bulk(count, expired=True)

    async def _bulk(self, count: int, *, expired: bool) -> None:
        chunk = 50_000
        for start in range(0, max(0, count), chunk):
            await self._copy_chunk(min(chunk, count - start), expired=expired)
        await self._pool.execute("ANALYZE users, sessions, refresh_tokens")

    async def _copy_chunk(self, count: int, *, expired: bool) -> None:
        now = datetime.now(UTC)
        created = now - 2 * _LIFETIME if expired else now
        ends = now - timedelta(days=1) if expired else now + _LIFETIME
        per_user = 10
        user_rows, session_rows, token_rows = [], [], []
        user_id = uuid.uuid4()
        for index in range(count):
            if index % per_user == 0:
                user_id = uuid.uuid4()
                email = f"background-{user_id.hex}@example.com"
                user_rows.append((user_id, email, "", self._password_hash, created, created))
            session_id = uuid.uuid4()
            session_rows.append(
                (session_id, user_id, created, created, ends, ends, False, "bench/1.0",
                 "127.0.0.1", "other", "Other", "Other", "background")
            )  # fmt: skip
            token_rows.append(
                (uuid.uuid4(), user_id, session_id, secrets.token_bytes(32), created, ends)
            )  # fmt: skip
        await self._copy(user_rows, session_rows, token_rows)

    async def _copy(
        self,
        user_rows: Sequence[tuple[object, ...]],
        session_rows: Sequence[tuple[object, ...]],
        token_rows: Sequence[tuple[object, ...]],
    ) -> None:
        """Users, their sessions and their tokens with COPY, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table("users", records=user_rows, columns=_USER_COLUMNS)
            # Login finds an account through its email's row (migration 0026).
            await conn.copy_records_to_table(
                "user_emails",
                records=[(row[1], row[0]) for row in user_rows],
                columns=("email", "user_id"),
            )
            await conn.copy_records_to_table(
                "sessions", records=session_rows, columns=_SESSION_COLUMNS
            )
            await conn.copy_records_to_table(
                "refresh_tokens", records=token_rows, columns=_TOKEN_COLUMNS
            )

    async def mint_access_tokens(self, sessions: list[SeededSession]) -> None:
        """One real Refresh per session: it gets an access token and a new refresh token."""
        if not sessions:
            return
        async with grpc.aio.insecure_channel(self._target) as channel:
            stub: Stub = Stub(channel)
            gate = asyncio.Semaphore(32)

            async def mint(session: SeededSession) -> None:
                async with gate:
                    response = await stub.Refresh(
                        pb.RefreshRequest(refresh_token=session.refresh_token), timeout=60
                    )
                session.refresh_token = response.refresh_token
                session.access_token = response.access_token

            await asyncio.gather(*(mint(session) for session in sessions))
