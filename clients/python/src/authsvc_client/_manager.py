"""TokenManager: one session's token pair, kept fresh for every call that needs it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from authsvc_client._errors import (
    AuthsvcError,
    InvalidArgument,
    SessionExpired,
    TokenExpired,
    error_for,
)
from authsvc_client._models import TokenPair
from authsvc_client._store import InMemoryTokenStore, TokenStore
from authsvc_client.v1.error_reason_pb2 import ErrorReason

__all__ = ["DEFAULT_REFRESH_SKEW", "Refresher", "SessionExpiredCallback", "TokenManager"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_REFRESH_SKEW = timedelta(seconds=60)

Refresher = Callable[[str, str], Awaitable[TokenPair]]
"""Rotates a refresh token (the first argument) with an idempotency key (the second):
the Refresh RPC, nothing else."""

SessionExpiredCallback = Callable[[SessionExpired], Awaitable[None] | None]
"""Told once when the session ends; a plain function or a coroutine function."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokenManager:
    """Holds a session's tokens and hands out an access token that is good to send.

    - Proactive: an access token within `refresh_skew` of its expiry (by `now`) is refreshed
      before it is sent. The skew is capped at half the token's lifetime as this client saw
      it, so against a service whose access tokens live shorter than the skew the client
      does not refresh before every call.
    - Reactive: a call the service rejects with TOKEN_EXPIRED (the clocks disagree) triggers
      a refresh and is retried once with the new token.
    - Single flight: however many calls need a refresh of the same tokens at once, one
      Refresh RPC runs and they all share its outcome, success or failure. A caller whose
      tokens were replaced (`set_tokens`) meanwhile starts its own: the old refresh answers
      only for the old tokens.
    - Terminal: when a refresh fails because the session is over (revoked, expired, refresh
      token reused...), or a call says the session is over, the tokens are cleared,
      `on_session_expired` is called once and every waiting call raises SessionExpired; later
      calls raise it too without touching the network, until new tokens are set (log in again).
      Transient failures (Unavailable, deadlines) are raised and leave the tokens in place.
    - Exactly once: each rotation sends an idempotency key, a fresh UUID, and the refresh
      that retries a rotation which failed without an answer (Unavailable, a deadline)
      sends the same key, so a rotation the service made but whose answer was lost is
      answered again with the same successor rather than taken for a replayed token.
    - Step-up: a new access token for the same session (StepUp, or an enrolment made in a
      session) replaces the access token only (`adopt_access_token`); the refresh token,
      and a rotation of it in flight, are left as they are.
    - Not its business: STEP_UP_REQUIRED (and every other refusal but TOKEN_EXPIRED and a
      session's end) goes to the caller as raised, with no refresh and no retry: a new
      token of the same session would be refused the same way.

    `now` is the manager's clock (aware UTC; the system clock by default): inject one in tests
    and move it instead of sleeping. Waiting calls raise only after `on_session_expired`
    returns, so keep it short. Every method must be called from the same event loop.
    """

    def __init__(
        self,
        refresh: Refresher,
        *,
        store: TokenStore | None = None,
        refresh_skew: timedelta = DEFAULT_REFRESH_SKEW,
        now: Callable[[], datetime] | None = None,
        on_session_expired: SessionExpiredCallback | None = None,
    ) -> None:
        if refresh_skew < timedelta(0):
            raise ValueError("refresh_skew must not be negative")
        self._refresher = refresh
        self._store: TokenStore = store if store is not None else InMemoryTokenStore()
        self._skew = refresh_skew
        self._now = now or _utc_now
        self._on_session_expired = on_session_expired
        self._pair: TokenPair | None = None
        # When _pair arrived: the token's lifetime as this client saw it starts there.
        self._received_at = self._now()
        self._is_loaded = False
        self._load_lock = asyncio.Lock()
        # The refresh in flight and the pair it rotates: only callers holding that pair join it.
        self._flight: tuple[TokenPair, asyncio.Task[TokenPair]] | None = None
        # The key of the rotation of this pair that has not been answered yet.
        self._pending_key: tuple[TokenPair, str] | None = None
        self._ended: SessionExpired | None = None

    @property
    def refresh_skew(self) -> timedelta:
        return self._skew

    async def tokens(self) -> TokenPair | None:
        """The current pair, or None when not signed in."""
        await self._ensure_loaded()
        return self._pair

    async def set_tokens(self, pair: TokenPair) -> None:
        """Adopt a new session's pair (after Login or Register) and store it."""
        await self._ensure_loaded()
        self._adopt(pair)
        self._ended = None
        await self._store.save(pair)

    async def clear(self) -> None:
        """Forget the tokens (after Logout). Does not call `on_session_expired`."""
        await self._ensure_loaded()
        self._pair = None
        self._ended = None
        await self._store.clear()

    async def adopt_access_token(
        self, session_id: uuid.UUID, access_token: str, expires_at: datetime
    ) -> bool:
        """Adopt a new access token of the current session (after StepUp): the refresh token
        stays. A refresh of the current pair in flight lands first, so its successor refresh
        token is kept and only its access token replaced. Returns False, adopting nothing,
        when the client is no longer signed in to `session_id` (signed out, or signed in
        again meanwhile)."""
        await self._ensure_loaded()
        while self._flight is not None and self._flight[0] is self._pair:
            # The refresh's own callers get its failure; here only its landing matters.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flight[1])
        pair = self._pair
        if pair is None or pair.session_id != session_id:
            return False
        stepped_up = replace(pair, access_token=access_token, access_token_expires_at=expires_at)
        if self._pending_key is not None and self._pending_key[0] is pair:
            # Same refresh token: an unanswered rotation of it must resend the same key.
            self._pending_key = (stepped_up, self._pending_key[1])
        self._adopt(stepped_up)
        await self._store.save(stepped_up)
        return True

    async def access_token(self) -> str | None:
        """An access token good to send, refreshing first if it is about to expire.

        None when not signed in (the call then goes without credentials and the service
        answers MISSING_CREDENTIALS). Raises SessionExpired once the session has ended.
        """
        await self._ensure_loaded()
        pair = self._pair
        if pair is None:
            if self._ended is not None:
                raise self._session_over()
            return None
        if not self._is_due(pair):
            return pair.access_token
        return (await self._refresh_from(pair.access_token)).access_token

    async def refresh(self, *, idempotency_key: str | None = None) -> TokenPair:
        """Refresh now, whatever the expiry; joins a refresh of the same tokens in flight.

        `idempotency_key` replaces the key this rotation would send (a new UUID, or the
        one of an earlier attempt at it that failed without an answer)."""
        await self._ensure_loaded()
        pair = self._pair
        if pair is None:
            raise self._not_signed_in()
        return await self._refresh_from(pair.access_token, idempotency_key)

    async def renew(self, rejected_access_token: str) -> str:
        """A fresh access token after the service rejected `rejected_access_token` as expired.

        If another call has refreshed since that token was handed out, its result is used and
        no RPC is made, so N calls rejected together cause one Refresh.
        """
        return (await self._refresh_from(rejected_access_token)).access_token

    async def end_session(self, rejected_access_token: str, error: SessionExpired) -> None:
        """Record that the service said the session behind this token is over.

        Only the first report for the current pair counts: the tokens are cleared and
        `on_session_expired` is called once.
        """
        pair = self._pair
        if pair is not None and pair.access_token == rejected_access_token:
            await self._end(pair, error)

    async def call(self, invoke: Callable[[str | None], Awaitable[_T]]) -> _T:
        """Run `invoke(access_token)`, refreshing and retrying once if it raises TokenExpired.

        `invoke` must raise this package's exceptions (AuthClient's methods do).
        """
        token = await self.access_token()
        try:
            try:
                return await invoke(token)
            except TokenExpired:
                if token is None:
                    raise
                token = await self.renew(token)
            return await invoke(token)
        except SessionExpired as exc:
            if token is not None:
                await self.end_session(token, exc)
            raise

    # --- internals ------------------------------------------------------------------------

    async def _ensure_loaded(self) -> None:
        if self._is_loaded:
            return
        async with self._load_lock:
            if not self._is_loaded:
                self._adopt(await self._store.load())
                self._is_loaded = True

    def _adopt(self, pair: TokenPair | None) -> None:
        self._pair = pair
        self._received_at = self._now()

    def _is_due(self, pair: TokenPair) -> bool:
        expires_at = pair.access_token_expires_at
        lifetime = max(expires_at - self._received_at, timedelta(0))
        return self._now() >= expires_at - min(self._skew, lifetime / 2)

    async def _refresh_from(
        self, stale_access_token: str, idempotency_key: str | None = None
    ) -> TokenPair:
        pair = self._pair
        if pair is None:
            raise self._not_signed_in()
        if pair.access_token != stale_access_token:
            # Someone refreshed since this token was read: use theirs.
            return pair
        if self._flight is None or self._flight[0] is not pair:
            flight = asyncio.ensure_future(self._rotate(pair, idempotency_key))
            # Read the outcome even if every waiter was cancelled, so asyncio never logs it
            # as "never retrieved".
            flight.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._flight = (pair, flight)
        # A waiter's cancellation must not cancel the refresh the others are waiting on.
        return await asyncio.shield(self._flight[1])

    def _key_for(self, pair: TokenPair, chosen: str | None) -> str:
        """The rotation's key: the caller's, else that of an unanswered attempt at it."""
        pending = self._pending_key
        if chosen is not None:
            key = chosen
        elif pending is not None and pending[0] is pair:
            key = pending[1]
        else:
            key = str(uuid.uuid4())
        self._pending_key = (pair, key)
        return key

    def _forget_key(self, pair: TokenPair) -> None:
        """The rotation of `pair` was answered: its key is spent (a newer pair's is kept)."""
        if self._pending_key is not None and self._pending_key[0] is pair:
            self._pending_key = None

    async def _rotate(self, pair: TokenPair, chosen_key: str | None = None) -> TokenPair:
        key = self._key_for(pair, chosen_key)
        try:
            try:
                rotated = await self._refresher(pair.refresh_token, key)
            except SessionExpired as exc:
                self._forget_key(pair)
                _log.info(
                    "session ended on refresh",
                    extra={
                        "event": "session_ended",
                        "reason": exc.reason,
                        "session_id": str(pair.session_id),
                    },
                )
                await self._end(pair, exc)
                raise
            except InvalidArgument:
                # The key was refused: the next attempt must not send it again.
                self._forget_key(pair)
                raise
            # Any other failure may have lost an answer: the key stays for the next attempt.
            self._forget_key(pair)
            if self._pair is pair:
                # Memory first: if the store fails, this process still holds the live token.
                self._adopt(rotated)
                await self._store.save(rotated)
            return rotated
        finally:
            # A newer pair's flight may have started meanwhile; that one is not ours to end.
            if self._flight is not None and self._flight[0] is pair:
                self._flight = None

    async def _end(self, pair: TokenPair, error: SessionExpired) -> None:
        if self._pair is not pair:
            return
        self._pair = None
        self._ended = error
        try:
            await self._store.clear()
        except Exception:
            _log.exception("could not clear the token store", extra={"event": "store_failed"})
        await self._notify(error)

    async def _notify(self, error: SessionExpired) -> None:
        if self._on_session_expired is None:
            return
        try:
            outcome = self._on_session_expired(error)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            # The callback's failure must not replace the SessionExpired the callers get.
            _log.exception("on_session_expired callback failed", extra={"event": "callback_failed"})

    def _session_over(self) -> SessionExpired:
        ended = self._ended
        assert ended is not None
        # A fresh exception of the same class each time (one raised object must not collect
        # every later caller's traceback).
        return type(ended)(
            ended.message, code=ended.code, reason=ended.reason, metadata=ended.metadata
        )

    def _not_signed_in(self) -> AuthsvcError:
        if self._ended is not None:
            return self._session_over()
        return error_for(ErrorReason.MISSING_CREDENTIALS, "not signed in: no tokens to refresh")
