"""SQL for second factors: user_factors and recovery_codes (migration 0030).

Every statement names the user, so on Citus each is a router query on the user's shard.
A change that ends the user's sessions follows store/accounts.py's locking rule: the
account's row lock FOR UPDATE first, then the change, then `end_user_sessions`, in one
transaction with its audit event. Single use is decided by conditional UPDATEs: a TOTP
step only if later than the last accepted (`totp_last_step < $step`), a recovery code
only while `used_at IS NULL`; of two concurrent calls with one code, one wins.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime

import asyncpg

from authsvc.core.errors import FactorAlreadyEnrolled
from authsvc.core.factors import FactorKind
from authsvc.core.models import (
    Account,
    AuditEvent,
    EndedSession,
    SealedSecret,
    SessionEnder,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.core.user_factors import Factor, FactorChange, FactorList, StoredTotp
from authsvc.store.admin import fetch_account
from authsvc.store.audit import insert_event
from authsvc.store.errors import translate_errors
from authsvc.store.pool import Connection
from authsvc.store.sessions import end_user_sessions
from authsvc.store.users import fetch_user_email

__all__ = ["PgFactorStore", "issue_first_recovery_codes"]

_LOCK_USER = "SELECT second_factor_required FROM users WHERE id = $1 FOR UPDATE"
_HAS_CONFIRMED_TOTP = """
SELECT EXISTS (SELECT FROM user_factors
               WHERE user_id = $1 AND kind = 'totp' AND confirmed_at IS NOT NULL)
"""
# One enrolment awaiting confirmation per user: a new EnrolTotp replaces the last.
_DROP_UNCONFIRMED_TOTP = """
DELETE FROM user_factors WHERE user_id = $1 AND kind = 'totp' AND confirmed_at IS NULL
"""
_INSERT_TOTP_ENROLMENT = """
INSERT INTO user_factors (user_id, id, kind, name, created_at, enrolment_expires_at,
                          totp_kek_id, totp_wrapped_key, totp_secret_sealed)
VALUES ($1, $2, 'totp', $3, $4, $5, $6, $7, $8)
"""
_TOTP_COLUMNS = """
    user_id, id, name, totp_kek_id, totp_wrapped_key, totp_secret_sealed, totp_last_step,
    confirmed_at, enrolment_expires_at
"""
# (Constants only in these f-strings: every value is a parameter.)
_TOTP_BY_ID = f"""
SELECT {_TOTP_COLUMNS} FROM user_factors WHERE user_id = $1 AND id = $2 AND kind = 'totp'
"""  # noqa: S608
_CONFIRMED_TOTP = f"""
SELECT {_TOTP_COLUMNS} FROM user_factors
WHERE user_id = $1 AND kind = 'totp' AND confirmed_at IS NOT NULL
"""  # noqa: S608
_FACTOR_COLUMNS = "user_id, id, kind, name, confirmed_at, last_used_at"
_CONFIRM_TOTP = f"""
UPDATE user_factors SET confirmed_at = $3, enrolment_expires_at = NULL,
    totp_last_step = $4, last_used_at = $3
WHERE user_id = $1 AND id = $2 AND kind = 'totp' AND confirmed_at IS NULL
  AND enrolment_expires_at > $3
RETURNING {_FACTOR_COLUMNS}
"""  # noqa: S608
_COUNT_OTHER_FACTORS = """
SELECT count(*) FROM user_factors
WHERE user_id = $1 AND id <> $2 AND confirmed_at IS NOT NULL
"""
_COUNT_FACTORS = """
SELECT count(*) FROM user_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL
"""
_ACCEPT_TOTP_STEP = """
UPDATE user_factors SET totp_last_step = $3, last_used_at = $4
WHERE user_id = $1 AND id = $2 AND kind = 'totp' AND confirmed_at IS NOT NULL
  AND (totp_last_step IS NULL OR totp_last_step < $3)
RETURNING id
"""
_USE_RECOVERY_CODE = """
UPDATE recovery_codes SET used_at = $3
WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL
RETURNING code_hash
"""
_DELETE_RECOVERY_CODES = "DELETE FROM recovery_codes WHERE user_id = $1"
_INSERT_RECOVERY_CODES = """
INSERT INTO recovery_codes (user_id, code_hash, created_at)
SELECT $1, code_hash, $3 FROM unnest($2::bytea[]) AS code_hash
"""
_FACTOR_KINDS = """
SELECT DISTINCT kind FROM user_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL
UNION ALL
SELECT 'recovery_code' WHERE EXISTS (
    SELECT FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL)
"""
_LIST_FACTORS = f"""
SELECT {_FACTOR_COLUMNS} FROM user_factors
WHERE user_id = $1 AND confirmed_at IS NOT NULL
ORDER BY confirmed_at, id
"""  # noqa: S608
_UNUSED_CODES = "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL"
_MARKED_REQUIRED = "SELECT second_factor_required FROM users WHERE id = $1"
_REMOVE_FACTOR = f"""
DELETE FROM user_factors WHERE user_id = $1 AND id = $2 AND confirmed_at IS NOT NULL
RETURNING {_FACTOR_COLUMNS}
"""  # noqa: S608
_SET_REQUIRED = """
UPDATE users SET second_factor_required = $2,
    updated_at = CASE WHEN second_factor_required = $2 THEN updated_at ELSE $3 END
WHERE id = $1
RETURNING id
"""


def _factor(row: asyncpg.Record) -> Factor:
    return Factor(
        id=row["id"],
        user_id=UserId(row["user_id"]),
        kind=FactorKind(row["kind"]),
        name=row["name"],
        created_at=row["confirmed_at"],
        last_used_at=row["last_used_at"],
    )


def _totp(row: asyncpg.Record) -> StoredTotp:
    return StoredTotp(
        id=row["id"],
        user_id=UserId(row["user_id"]),
        name=row["name"],
        sealed_secret=SealedSecret(
            kek_id=row["totp_kek_id"],
            wrapped_data_key=row["totp_wrapped_key"],
            ciphertext=row["totp_secret_sealed"],
        ),
        last_step=row["totp_last_step"],
        confirmed_at=row["confirmed_at"],
        enrolment_expires_at=row["enrolment_expires_at"],
    )


async def _replace_codes(
    conn: Connection, user_id: UserId, code_hashes: list[bytes], now: datetime
) -> None:
    await conn.execute(_DELETE_RECOVERY_CODES, user_id)
    await conn.execute(_INSERT_RECOVERY_CODES, user_id, code_hashes, now)


async def issue_first_recovery_codes(
    conn: Connection, user_id: UserId, factor_id: uuid.UUID, code_hashes: list[bytes], now: datetime
) -> bool:
    """On `conn`, inside the caller's transaction (which holds the account's row lock and
    has just confirmed `factor_id`): if the user has no other confirmed factor, replace the
    recovery codes by `code_hashes` and return True. For ConfirmTotp, and for
    FinishPasskeyRegistration (store/passkeys.py), so a first factor of either kind comes
    with codes."""
    if await conn.fetchval(_COUNT_OTHER_FACTORS, user_id, factor_id):
        return False
    await _replace_codes(conn, user_id, code_hashes, now)
    return True


async def _end_sessions(
    conn: Connection,
    user_id: UserId,
    *,
    now: datetime,
    ender: SessionEnder,
    keep: SessionId | None,
    event: AuditEvent,
) -> list[EndedSession]:
    return await end_user_sessions(
        conn,
        user_id,
        now=now,
        revoke_reason=SessionEndReason.SECOND_FACTOR_CHANGED.value,
        ended_by=SessionEndReason.SECOND_FACTOR_CHANGED,
        ender=ender,
        event=event,
        keep=keep,
    )


class PgFactorStore:
    """domain.factors.FactorStore in PostgreSQL; contracts on the Protocol."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def user_email(self, user_id: UserId) -> str | None:
        async with translate_errors():
            return await fetch_user_email(self._pool, user_id)

    async def add_totp_enrolment(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        name: str,
        sealed_secret: SealedSecret,
        now: datetime,
        expires_at: datetime,
    ) -> bool:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_HAS_CONFIRMED_TOTP, user_id):
                return False
            await conn.execute(_DROP_UNCONFIRMED_TOTP, user_id)
            await conn.execute(
                _INSERT_TOTP_ENROLMENT,
                user_id,
                factor_id,
                name,
                now,
                expires_at,
                sealed_secret.kek_id,
                sealed_secret.wrapped_data_key,
                sealed_secret.ciphertext,
            )
            return True

    async def find_totp(self, user_id: UserId, factor_id: uuid.UUID | None) -> StoredTotp | None:
        async with translate_errors():
            if factor_id is None:
                row = await self._pool.fetchrow(_CONFIRMED_TOTP, user_id)
            else:
                row = await self._pool.fetchrow(_TOTP_BY_ID, user_id, factor_id)
        return None if row is None else _totp(row)

    async def confirm_totp(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        step: int,
        now: datetime,
        first_codes: list[bytes],
        keep: SessionId | None,
        event: AuditEvent,
    ) -> FactorChange | None:
        try:
            async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
                if await conn.fetchrow(_LOCK_USER, user_id) is None:
                    return None
                row = await conn.fetchrow(_CONFIRM_TOTP, user_id, factor_id, now, step)
                if row is None:
                    return None
                issued = await issue_first_recovery_codes(
                    conn, user_id, factor_id, first_codes, now
                )
                ended = await _end_sessions(
                    conn, user_id, now=now, ender=SessionEnder.user(keep), keep=keep, event=event
                )
        except asyncpg.UniqueViolationError:
            # user_factors_one_totp: another enrolment of the user was confirmed first.
            raise FactorAlreadyEnrolled("the user has a TOTP factor already") from None
        return FactorChange(factor=_factor(row), issued_codes=issued, ended=ended)

    async def accept_totp_step(
        self, user_id: UserId, factor_id: uuid.UUID, *, step: int, now: datetime, event: AuditEvent
    ) -> bool:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_ACCEPT_TOTP_STEP, user_id, factor_id, step, now) is None:
                return False
            await insert_event(conn, event)
            return True

    async def use_recovery_code(
        self, user_id: UserId, code_hash: bytes, *, now: datetime, event: AuditEvent
    ) -> bool:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_USE_RECOVERY_CODE, user_id, code_hash, now) is None:
                return False
            await insert_event(conn, event)
            return True

    async def factor_kinds(self, user_id: UserId) -> frozenset[FactorKind]:
        async with translate_errors():
            rows = await self._pool.fetch(_FACTOR_KINDS, user_id)
        return frozenset(FactorKind(row["kind"]) for row in rows)

    async def list_factors(self, user_id: UserId, *, event: AuditEvent | None) -> FactorList | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            marked = await conn.fetchval(_MARKED_REQUIRED, user_id)
            if marked is None:
                return None
            factors = tuple(_factor(row) for row in await conn.fetch(_LIST_FACTORS, user_id))
            remaining = await conn.fetchval(_UNUSED_CODES, user_id)
            if event is not None:
                await insert_event(conn, event)
        return FactorList(
            factors=factors, recovery_codes_remaining=remaining, second_factor_required=marked
        )

    async def remove_factor(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        now: datetime,
        ender: SessionEnder,
        keep: SessionId | None,
        event: AuditEvent,
    ) -> FactorChange | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchrow(_LOCK_USER, user_id) is None:
                return None
            row = await conn.fetchrow(_REMOVE_FACTOR, user_id, factor_id)
            if row is None:
                return None
            # The last factor gone, its recovery codes would be a factor on their own.
            if not await conn.fetchval(_COUNT_FACTORS, user_id):
                await conn.execute(_DELETE_RECOVERY_CODES, user_id)
            factor = _factor(row)
            event = replace(event, detail={**event.detail, "factor_type": factor.kind.value})
            ended = await _end_sessions(conn, user_id, now=now, ender=ender, keep=keep, event=event)
        return FactorChange(factor=factor, issued_codes=False, ended=ended)

    async def replace_recovery_codes(
        self,
        user_id: UserId,
        code_hashes: list[bytes],
        *,
        now: datetime,
        keep: SessionId | None,
        event: AuditEvent,
    ) -> FactorChange | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchrow(_LOCK_USER, user_id) is None:
                return None
            if not await conn.fetchval(_COUNT_FACTORS, user_id):
                return None
            await _replace_codes(conn, user_id, code_hashes, now)
            ended = await _end_sessions(
                conn, user_id, now=now, ender=SessionEnder.user(keep), keep=keep, event=event
            )
        return FactorChange(factor=None, issued_codes=True, ended=ended)

    async def set_second_factor_required(
        self, user_id: UserId, required: bool, *, now: datetime, event: AuditEvent
    ) -> Account | None:
        async with translate_errors(), self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_SET_REQUIRED, user_id, required, now) is None:
                return None
            await insert_event(conn, event)
            return await fetch_account(conn, user_id, now=now)

    async def record(self, event: AuditEvent) -> None:
        async with translate_errors(), self._pool.acquire() as conn:
            await insert_event(conn, event)
