"""SyncAuthClient: the async client for synchronous code (WSGI workers, scripts, CLIs)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from authsvc_client._client import DEFAULT_TIMEOUT, AuthClient
from authsvc_client._manager import DEFAULT_REFRESH_SKEW, SessionExpiredCallback
from authsvc_client._models import (
    FactorList,
    FactorProof,
    LogoutScope,
    PendingLogin,
    RecoveryCodes,
    Session,
    SessionPage,
    SteppedUp,
    TokenPair,
    TokenValidation,
    TotpConfirmation,
    TotpEnrolment,
)
from authsvc_client._store import TokenStore

__all__ = ["SyncAuthClient"]

_T = TypeVar("_T")


class SyncAuthClient:
    """AuthClient's methods as plain blocking calls, with the same token management.

    It runs an AuthClient on a private event loop in a daemon thread, so it works where no
    loop runs (Django, Flask) and is safe to share between threads: concurrent calls from many
    threads still share one token refresh. `on_session_expired` runs on that private thread.
    Do not call it from inside a running event loop's thread if that loop must not block: use
    AuthClient there. Close it (or use `with`) to stop the thread and the channel.
    `service_key` is AuthClient's: sent on ValidateToken and GetJwks.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        user_agent: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
        store: TokenStore | None = None,
        refresh_skew: timedelta = DEFAULT_REFRESH_SKEW,
        now: Callable[[], datetime] | None = None,
        on_session_expired: SessionExpiredCallback | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        service_key: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="authsvc-client", daemon=True
        )
        self._thread.start()
        self._closed = False

        async def build() -> AuthClient:
            # grpc.aio binds a channel to the loop it is created on: create it on ours.
            return AuthClient.connect(
                target,
                credentials=credentials,
                user_agent=user_agent,
                options=options,
                store=store,
                refresh_skew=refresh_skew,
                now=now,
                on_session_expired=on_session_expired,
                timeout=timeout,
                service_key=service_key,
            )

        try:
            self._client = self._run(build())
        except BaseException:
            self._stop_loop()
            raise

    @property
    def async_client(self) -> AuthClient:
        """The AuthClient underneath; only for use on its own loop."""
        return self._client

    def close(self) -> None:
        """Close the channel and stop the private loop's thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._client.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def register(
        self,
        email: str,
        password: str,
        *,
        display_name: str = "",
        remember_me: bool = False,
        device_name: str = "",
    ) -> TokenPair:
        return self._run(
            self._client.register(
                email,
                password,
                display_name=display_name,
                remember_me=remember_me,
                device_name=device_name,
            )
        )

    def login(
        self, email: str, password: str, *, remember_me: bool = False, device_name: str = ""
    ) -> TokenPair:
        return self._run(
            self._client.login(email, password, remember_me=remember_me, device_name=device_name)
        )

    def complete_login(self, pending: PendingLogin | str, proof: FactorProof) -> TokenPair:
        return self._run(self._client.complete_login(pending, proof))

    def step_up(self, proof: FactorProof) -> SteppedUp:
        return self._run(self._client.step_up(proof))

    def list_factors(self) -> FactorList:
        return self._run(self._client.list_factors())

    def enrol_totp(
        self, name: str = "", *, pending: PendingLogin | str | None = None
    ) -> TotpEnrolment:
        return self._run(self._client.enrol_totp(name, pending=pending))

    def confirm_totp(
        self, factor_id: uuid.UUID | str, code: str, *, pending: PendingLogin | str | None = None
    ) -> TotpConfirmation:
        return self._run(self._client.confirm_totp(factor_id, code, pending=pending))

    def remove_factor(self, factor_id: uuid.UUID | str) -> int:
        return self._run(self._client.remove_factor(factor_id))

    def regenerate_recovery_codes(self) -> RecoveryCodes:
        return self._run(self._client.regenerate_recovery_codes())

    def refresh(self, *, idempotency_key: str | None = None) -> TokenPair:
        return self._run(self._client.refresh(idempotency_key=idempotency_key))

    def logout(self, scope: LogoutScope = LogoutScope.THIS_SESSION) -> int:
        return self._run(self._client.logout(scope))

    def reset_password(self, reset_token: str, new_password: str) -> int:
        return self._run(self._client.reset_password(reset_token, new_password))

    def list_sessions(self, *, page_size: int = 0, page_token: str = "") -> SessionPage:
        return self._run(self._client.list_sessions(page_size=page_size, page_token=page_token))

    def iter_sessions(self, *, page_size: int = 0) -> Iterator[Session]:
        """Every live session of the caller; fetches the next page only when needed."""
        pages = self._client.iter_sessions(page_size=page_size)

        async def next_session() -> Session | None:
            try:
                return await anext(pages)
            except StopAsyncIteration:
                return None

        try:
            while (item := self._run(next_session())) is not None:
                yield item
        finally:
            if not self._closed:
                self._run(pages.aclose())

    def revoke_session(self, session_id: uuid.UUID | str, *, reason: str = "") -> None:
        self._run(self._client.revoke_session(session_id, reason=reason))

    def change_password(self, current_password: str, new_password: str) -> int:
        return self._run(self._client.change_password(current_password, new_password))

    def validate_token(self, access_token: str) -> TokenValidation:
        return self._run(self._client.validate_token(access_token))

    def get_jwks(self) -> dict[str, Any]:
        return self._run(self._client.get_jwks())

    def tokens(self) -> TokenPair | None:
        """The current token pair, or None when not signed in."""
        return self._run(self._client.tokens.tokens())

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        if self._closed and not self._loop.is_running():
            coroutine.close()
            raise RuntimeError("SyncAuthClient is closed")
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
