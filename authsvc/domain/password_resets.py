"""Password resets: an operator issues a single-use token, the user spends it on a new
password, and every session of the account ends with the change."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn, Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import PasswordResetTokenInvalid, UserDisabled, UserNotFound
from authsvc.core.models import (
    AuditEvent,
    EndedSession,
    Operator,
    RequestOrigin,
    ResetTarget,
    SessionEndReason,
    UserId,
)
from authsvc.domain import refresh_tokens, validation
from authsvc.domain.admin import AdminEvent, admin_event
from authsvc.domain.passwords import Lane, PasswordHasher
from authsvc.domain.sessions import SessionService
from authsvc.domain.throttle import LoginAttempt, LoginThrottle

__all__ = ["IssuedResetToken", "PasswordResetStore", "PasswordResets"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedResetToken:
    user_id: UserId
    # Shown once, to the operator who asked; only its hash is stored.
    token: str = field(repr=False)
    expires_at: datetime


class PasswordResetStore(Protocol):
    """Reset tokens, stored as SHA-256 hashes. Every method raises DatabaseUnavailable
    when the database cannot be reached in time; then nothing it would have written is
    written."""

    async def find_user(self, *, user_id: UserId | None, email: str | None) -> ResetTarget | None:
        """The account with this id, or else with exactly this (canonical) email; None
        if there is none."""
        ...

    async def create_token(
        self, *, token_hash: bytes, user_id: UserId, expires_at: datetime, event: AuditEvent
    ) -> bool:
        """Store a token for the user, created at `event.occurred_at`, and record `event`,
        in one transaction. False, with nothing written, if the user no longer exists or
        is disabled."""
        ...

    async def find_target(self, token_hash: bytes, *, now: datetime) -> ResetTarget | None:
        """The enabled account whose token has this hash and is unexpired at `now`; None
        for an unknown, spent or expired token, or a disabled account, alike. Locks and
        writes nothing."""
        ...

    async def reset(
        self,
        token_hash: bytes,
        *,
        now: datetime,
        password_hash: str,
        event: AuditEvent,
    ) -> list[EndedSession] | None:
        """Spend the token and set the password, in one transaction holding the user's
        row lock: if the token is still unexpired at `now` and its account enabled,
        delete every reset token of the account, replace its password hash, and end each
        of its live sessions as PASSWORD_RESET by the user (with no session), with `event`
        recorded as `SessionStore.end_user_sessions` records it. The sessions ended; None, with
        nothing written, if the token was not good (concurrent resets with one token:
        exactly one gets a list)."""
        ...


class PasswordResets:
    """CreatePasswordResetToken (an operator's) and ResetPassword (a user's)."""

    def __init__(
        self,
        *,
        store: PasswordResetStore,
        sessions: SessionService,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        clock: Clock,
        ttl: timedelta,
        password_min_length: int,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._hasher = hasher
        self._throttle = throttle
        self._clock = clock
        self._ttl = ttl
        self._password_min_length = password_min_length

    async def create_token(
        self,
        *,
        user_id: UserId | None = None,
        email: str | None = None,
        operator: Operator,
    ) -> IssuedResetToken:
        """A new token for the account named by id or email. UserNotFound if there is
        none; UserDisabled for a disabled account, whose token ResetPassword would refuse
        anyway (a reset must not let a disabled user back in). Earlier unused tokens stay
        good until one of them is spent."""
        if email is not None:
            email = validation.normalize_email(email)
        target = await self._store.find_user(user_id=user_id, email=email)
        if target is None:
            raise UserNotFound("user not found")
        if target.disabled:
            raise UserDisabled("user is disabled")
        token = refresh_tokens.new_secret()
        now = self._clock.now()
        expires_at = now + self._ttl
        created = await self._store.create_token(
            token_hash=refresh_tokens.hash_refresh_token(token),
            user_id=target.user_id,
            expires_at=expires_at,
            event=admin_event(
                AdminEvent.PASSWORD_RESET_TOKEN_CREATED,
                operator,
                now,
                user_id=target.user_id,
                expires_at=expires_at.isoformat(),
            ),
        )
        if not created:
            # Deleted or disabled since it was found: as if it had been before.
            raise UserNotFound("user not found")
        _log.info(
            "password reset token created",
            extra={"event": "password_reset_token_created", "user_id": str(target.user_id)},
        )
        return IssuedResetToken(user_id=target.user_id, token=token, expires_at=expires_at)

    async def reset_password(
        self, *, reset_token: str, new_password: str, origin: RequestOrigin
    ) -> int:
        """Set the password of the token's account and end every one of its sessions;
        the number ended. An unknown, spent or expired token, or a disabled account's,
        is PasswordResetTokenInvalid, after the same single lookup whichever it is, and
        counts as a failure for the client address (RateLimited once its failures are
        spent, as Login). A new password against the policy is WeakPassword, and the
        token stays good."""
        validation.check_password_given(new_password, field="new_password")
        now = self._clock.now()
        refused = AuditEvent(
            event="password_reset_failed",
            occurred_at=now,
            origin=origin,
            detail={"reason": "rate_limited"},
        )
        client = self._throttle.client_of(origin.ip_address)
        async with self._throttle.address_attempt(origin.ip_address, refused) as attempt:
            # Garbage costs the lookup too: the same work for every token that is not good.
            token_hash = refresh_tokens.hash_refresh_token(reset_token)
            target = await self._store.find_target(token_hash, now=now)
            if target is None:
                await self._invalid(attempt, origin)
            validation.check_new_password(
                new_password,
                min_length=self._password_min_length,
                email=target.email,
                field="new_password",
            )
            password_hash = await self._hasher.hash(new_password, Lane.SIGN_IN, client=client)
            now = self._clock.now()
            ended = await self._store.reset(
                token_hash,
                now=now,
                password_hash=password_hash,
                event=AuditEvent(
                    event="password_reset", occurred_at=now, user_id=target.user_id, origin=origin
                ),
            )
            if ended is None:
                # Spent by a concurrent reset (or expired, or disabled) since the lookup.
                await self._invalid(attempt, origin)
        self._sessions.sessions_ended(target.user_id, ended, SessionEndReason.PASSWORD_RESET, now)
        _log.info(
            "password reset", extra={"event": "password_reset", "user_id": str(target.user_id)}
        )
        return len(ended)

    async def _invalid(self, attempt: LoginAttempt, origin: RequestOrigin) -> NoReturn:
        _log.info("password reset failed", extra={"event": "password_reset_failed"})
        await attempt.failed(
            AuditEvent(
                event="password_reset_failed",
                occurred_at=self._clock.now(),
                origin=origin,
                detail={"reason": "invalid_token"},
            )
        )
        raise PasswordResetTokenInvalid("password reset token is not valid")
