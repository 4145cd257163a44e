"""AuthClient: typed async calls to authsvc, with the session's tokens managed for you."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from authsvc_client._errors import SecondFactorRequired, error_from_rpc
from authsvc_client._manager import DEFAULT_REFRESH_SKEW, SessionExpiredCallback, TokenManager
from authsvc_client._models import (
    AssuranceLevel,
    FactorList,
    FactorProof,
    FeedEvent,
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
    factor,
    factor_proof,
    feed_event,
    instant,
    pending_login,
    session,
    signed_in_pair,
    token_pair,
    token_validation,
)
from authsvc_client._service_config import DEFAULT_SERVICE_CONFIG
from authsvc_client._store import TokenStore
from authsvc_client.v1 import auth_service_pb2 as pb
from authsvc_client.v1 import auth_service_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_TIMEOUT", "AuthClient"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

DEFAULT_TIMEOUT = 10.0
"""Seconds each RPC may take unless the client is built with another `timeout`."""


_Metadata = tuple[tuple[str, str], ...]


def _bearer(credential: str | None) -> _Metadata | None:
    return None if credential is None else (("authorization", f"Bearer {credential}"),)


def _pending_token(pending: PendingLogin | str) -> str:
    return pending if isinstance(pending, str) else pending.pending_login_token


def _checked_service_key(key: str | None) -> str | None:
    """The key as given; refuses what gRPC metadata cannot carry, without echoing it."""
    if key is None:
        return None
    if not key or not key.isascii() or not key.isprintable() or key != key.strip() or " " in key:
        raise ValueError("service_key must be a non-empty string of printable ASCII, no spaces")
    return key


class AuthClient:
    """Every AuthService RPC as a typed coroutine, for one signed-in session at a time.

    `register` and `login` keep the new session's tokens in `tokens` (a TokenManager);
    `logout`, `list_sessions` and `revoke_session` send its access token, refreshed
    before it expires and once more if the service says it has. Failures raise the
    exceptions in `authsvc_client` (AuthsvcError and subclasses), never grpc errors.

    Build it on a `grpc.aio.Channel` you own, or with `AuthClient.connect(target)`, which
    owns its channel and closes it in `close()` / `async with`.

    An internal service passes `service_key` (from `authsvc service-key create`): it is
    sent as `authorization: Bearer <key>` on the service RPCs (WatchRevocations,
    ValidateToken, GetJwks), never on a user's calls, and never logged or shown by `repr`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        store: TokenStore | None = None,
        refresh_skew: timedelta = DEFAULT_REFRESH_SKEW,
        now: Callable[[], datetime] | None = None,
        on_session_expired: SessionExpiredCallback | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        service_key: str | None = None,
    ) -> None:
        self._channel = channel
        self._service_credentials = _bearer(_checked_service_key(service_key))
        self._owns_channel = False
        self._stub = pb_grpc.AuthServiceStub(channel)
        self._timeout = timeout
        self._tokens = TokenManager(
            self._rotate,
            store=store,
            refresh_skew=refresh_skew,
            now=now,
            on_session_expired=on_session_expired,
        )

    @classmethod
    def connect(
        cls,
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
    ) -> AuthClient:
        """A client on its own channel to `target` (TLS when `credentials` are given).

        `user_agent` is what the service records as the session's device
        (the channel option `grpc.primary_user_agent`). The channel retries as
        DEFAULT_SERVICE_CONFIG says unless `options` hold a `grpc.service_config` of
        their own.
        """
        _checked_service_key(service_key)  # before there is a channel to leak
        channel_options = list(options)
        if all(name != "grpc.service_config" for name, _ in channel_options):
            channel_options.append(("grpc.service_config", DEFAULT_SERVICE_CONFIG))
        if user_agent:
            channel_options.append(("grpc.primary_user_agent", user_agent))
        channel = (
            grpc.aio.insecure_channel(target, options=channel_options)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=channel_options)
        )
        client = cls(
            channel,
            store=store,
            refresh_skew=refresh_skew,
            now=now,
            on_session_expired=on_session_expired,
            timeout=timeout,
            service_key=service_key,
        )
        client._owns_channel = True
        return client

    @property
    def tokens(self) -> TokenManager:
        """The session's tokens; hand it to BearerAuthInterceptor for other services' channels."""
        return self._tokens

    async def close(self) -> None:
        """Close the channel if `connect` opened it; a channel you passed in stays yours."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # --- signing in ---------------------------------------------------------------------

    async def register(
        self,
        email: str,
        password: str,
        *,
        display_name: str = "",
        remember_me: bool = False,
        device_name: str = "",
    ) -> TokenPair:
        """Create an account and sign it in; the new session's tokens become this client's.

        A server that does not reveal accounts (its default) answers Register without tokens,
        the same for a new and a taken email; this then signs in with Login, so a taken email
        raises InvalidCredentials unless `password` is its owner's. A revealing server signs
        in itself and answers a taken email with EmailTaken. Raises SecondFactorRequired, as
        `login` does, when the account must have a second factor first.
        """
        response = await self._unary(
            self._stub.Register,
            pb.RegisterRequest(
                email=email,
                password=password,
                display_name=display_name,
                remember_me=remember_me,
                device_name=device_name,
            ),
        )
        if response.HasField("second_factor"):
            raise SecondFactorRequired(pending_login(response.second_factor))
        if not response.access_token:
            return await self.login(
                email, password, remember_me=remember_me, device_name=device_name
            )
        pair = token_pair(response)
        await self._tokens.set_tokens(pair)
        return pair

    async def login(
        self, email: str, password: str, *, remember_me: bool = False, device_name: str = ""
    ) -> TokenPair:
        """Start a session; its tokens become this client's. Wrong password and unknown
        email both raise InvalidCredentials.

        When the password is right and the account has a second factor (or must enrol one),
        no session starts yet: SecondFactorRequired is raised, carrying the PendingLogin to
        pass to `complete_login` (or, when `enrolment_required`, to `enrol_totp` and
        `confirm_totp`). The client's tokens are left as they were.
        """
        response = await self._unary(
            self._stub.Login,
            pb.LoginRequest(
                email=email, password=password, remember_me=remember_me, device_name=device_name
            ),
        )
        if response.HasField("second_factor"):
            raise SecondFactorRequired(pending_login(response.second_factor))
        pair = token_pair(response)
        await self._tokens.set_tokens(pair)
        return pair

    async def complete_login(self, pending: PendingLogin | str, proof: FactorProof) -> TokenPair:
        """Finish a two-step login with one verification of a second factor (TotpCode,
        RecoveryCode or PasskeyAssertion); the new session, at AAL2, becomes this client's
        as `login`'s does. `pending` is SecondFactorRequired.pending, or its token alone (a
        web app that kept it between two requests).

        SecondFactorInvalid for a wrong or reused code (throttled like a wrong password; the
        pending login allows a few); PendingLoginInvalid when it is unknown, used, expired or
        out of attempts: `login` again.
        """
        response = await self._unary(
            self._stub.CompleteLogin,
            pb.CompleteLoginRequest(
                pending_login_token=_pending_token(pending), proof=factor_proof(proof)
            ),
        )
        pair = token_pair(response)
        await self._tokens.set_tokens(pair)
        return pair

    async def refresh(self, *, idempotency_key: str | None = None) -> TokenPair:
        """Rotate this client's refresh token now (usually unnecessary: calls refresh as
        needed). Joins a refresh already in flight; raises SessionExpired if the session is
        over. Every rotation carries an idempotency key (see TokenManager); pass your own
        (16 to 128 printable ASCII characters) to choose it."""
        return await self._tokens.refresh(idempotency_key=idempotency_key)

    async def logout(self, scope: LogoutScope = LogoutScope.THIS_SESSION) -> int:
        """Revoke this session, the other sessions or all; return how many this revoked.

        When this session is among them, the client forgets its tokens.
        """
        response = await self._tokens.call(
            lambda token: self._unary(
                self._stub.Logout, pb.LogoutRequest(scope=scope.value), _bearer(token)
            )
        )
        if scope is not LogoutScope.OTHER_SESSIONS:
            await self._tokens.clear()
        return response.revoked_session_count

    async def reset_password(self, reset_token: str, new_password: str) -> int:
        """Set a new password with a reset token (an operator's
        AdminService.CreatePasswordResetToken, delivered by your own channel); every
        session of the account ends, and the number ended comes back. Needs no sign-in
        and signs nobody in: Login with the new password next. This client's own tokens
        are kept (the call does not say whose account it reset); they stop working if
        they were that account's.

        PasswordResetTokenInvalid for an unknown, used or expired token alike;
        WeakPassword if `new_password` breaks the policy (the token stays good);
        RateLimited after too many invalid tokens from one address.
        """
        response = await self._unary(
            self._stub.ResetPassword,
            pb.ResetPasswordRequest(reset_token=reset_token, new_password=new_password),
        )
        return response.revoked_session_count

    # --- sessions -----------------------------------------------------------------------

    async def list_sessions(self, *, page_size: int = 0, page_token: str = "") -> SessionPage:
        """One page of the caller's live sessions, most recent activity first.

        `page_size` 0 means the service's default (50); pass the previous page's
        `next_page_token` for the next. `iter_sessions` walks every page for you.
        """
        request = pb.ListSessionsRequest(page_size=page_size, page_token=page_token)
        response = await self._tokens.call(
            lambda token: self._unary(self._stub.ListSessions, request, _bearer(token))
        )
        return SessionPage(
            sessions=tuple(session(s) for s in response.sessions),
            next_page_token=response.next_page_token,
        )

    async def iter_sessions(self, *, page_size: int = 0) -> AsyncGenerator[Session, None]:
        """Every live session of the caller, page by page."""
        page_token = ""
        while True:
            page = await self.list_sessions(page_size=page_size, page_token=page_token)
            for item in page.sessions:
                yield item
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def revoke_session(self, session_id: uuid.UUID | str, *, reason: str = "") -> None:
        """Revoke one of the caller's sessions; NotFound if it is not theirs. Idempotent."""
        request = pb.RevokeSessionRequest(session_id=str(session_id), reason=reason)
        await self._tokens.call(
            lambda token: self._unary(self._stub.RevokeSession, request, _bearer(token))
        )

    # --- the account ------------------------------------------------------------------

    async def change_password(self, current_password: str, new_password: str) -> int:
        """Replace the caller's password, given the current one; return how many of the
        user's other sessions it ended. This session stays signed in, its tokens unchanged.

        InvalidCredentials for a wrong current password (counted as a failed login);
        RateLimited once too many failed; WeakPassword for a new password the policy
        refuses, with nothing changed.
        """
        request = pb.ChangePasswordRequest(
            current_password=current_password, new_password=new_password
        )
        response = await self._tokens.call(
            lambda token: self._unary(self._stub.ChangePassword, request, _bearer(token))
        )
        return response.revoked_session_count

    # --- second factors ------------------------------------------------------------------

    async def step_up(self, proof: FactorProof) -> SteppedUp:
        """Verify a second factor in this session (StepUp), after a call raised
        StepUpRequired: the session becomes AAL2 and the client swaps in the new access token
        that says so (same session, same refresh token); sensitive calls then succeed until
        `step_up_expires_at`. SecondFactorInvalid for a wrong or reused code.
        """
        request = pb.StepUpRequest(proof=factor_proof(proof))
        response, session_id = await self._call_as_session(self._stub.StepUp, request)
        expires_at = instant(response.access_token_expires_at)
        await self._adopt_access_token(session_id, response.access_token, expires_at)
        return SteppedUp(
            assurance_level=AssuranceLevel(response.assurance_level),
            step_up_expires_at=instant(response.step_up_expires_at),
            access_token_expires_at=expires_at,
        )

    async def list_factors(self) -> FactorList:
        """The caller's confirmed second factors (never a secret), the number of unused
        recovery codes, and whether the user must have a second factor."""
        response = await self._tokens.call(
            lambda token: self._unary(
                self._stub.ListFactors, pb.ListFactorsRequest(), _bearer(token)
            )
        )
        return FactorList(
            factors=tuple(factor(item) for item in response.factors),
            recovery_codes_remaining=response.recovery_codes_remaining,
            second_factor_required=response.second_factor_required,
        )

    async def enrol_totp(
        self, name: str = "", *, pending: PendingLogin | str | None = None
    ) -> TotpEnrolment:
        """Start enrolling a TOTP app: its secret and otpauth:// URI, shown once; nothing
        counts until `confirm_totp`. In a session, this needs a recent sign-in or step-up
        (StepUpRequired otherwise); with `pending` (a login that answered
        `enrolment_required`), the pending login is the credential instead.
        FactorAlreadyEnrolled if the user has a TOTP already.
        """
        request = pb.EnrolTotpRequest(
            name=name, pending_login_token="" if pending is None else _pending_token(pending)
        )
        if pending is None:
            response = await self._tokens.call(
                lambda token: self._unary(self._stub.EnrolTotp, request, _bearer(token))
            )
        else:
            response = await self._unary(self._stub.EnrolTotp, request)
        return TotpEnrolment(
            factor_id=uuid.UUID(response.factor_id),
            secret=response.secret,
            provisioning_uri=response.provisioning_uri,
            expires_at=instant(response.expires_at),
        )

    async def confirm_totp(
        self,
        factor_id: uuid.UUID | str,
        code: str,
        *,
        pending: PendingLogin | str | None = None,
    ) -> TotpConfirmation:
        """Confirm a TOTP enrolment with the first code the app shows. The user's other
        sessions end (SECOND_FACTOR_CHANGED). In a session, the session becomes AAL2 and the
        client swaps in its new access token; with `pending`, the pending login becomes a
        session, this client's as after `login`. The first factor comes with recovery codes,
        shown once. SecondFactorInvalid for a wrong code; FactorNotFound for an unknown or
        expired enrolment.
        """
        request = pb.ConfirmTotpRequest(
            factor_id=str(factor_id),
            code=code,
            pending_login_token="" if pending is None else _pending_token(pending),
        )
        if pending is None:
            response, session_id = await self._call_as_session(self._stub.ConfirmTotp, request)
            signed_in = response.signed_in
            await self._adopt_access_token(
                session_id, signed_in.access_token, instant(signed_in.access_token_expires_at)
            )
            tokens = None
        else:
            response = await self._unary(self._stub.ConfirmTotp, request)
            tokens = signed_in_pair(response.signed_in)
            if tokens is not None:
                await self._tokens.set_tokens(tokens)
        return TotpConfirmation(
            factor=factor(response.factor),
            recovery_codes=tuple(response.recovery_codes),
            tokens=tokens,
        )

    async def remove_factor(self, factor_id: uuid.UUID | str) -> int:
        """Remove one of the caller's factors (the last one takes the recovery codes with
        it); return how many of the user's other sessions it ended. Needs a recent step-up
        (StepUpRequired); FactorNotFound if it is not the caller's."""
        request = pb.RemoveFactorRequest(factor_id=str(factor_id))
        response = await self._tokens.call(
            lambda token: self._unary(self._stub.RemoveFactor, request, _bearer(token))
        )
        return response.revoked_session_count

    async def regenerate_recovery_codes(self) -> RecoveryCodes:
        """Replace the caller's recovery codes with a new set, shown once; the old set stops
        working and the user's other sessions end. Needs a recent step-up (StepUpRequired)."""
        response = await self._tokens.call(
            lambda token: self._unary(
                self._stub.RegenerateRecoveryCodes,
                pb.RegenerateRecoveryCodesRequest(),
                _bearer(token),
            )
        )
        return RecoveryCodes(
            recovery_codes=tuple(response.recovery_codes),
            revoked_session_count=response.revoked_session_count,
        )

    # --- for internal services ------------------------------------------------------------

    async def validate_token(self, access_token: str) -> TokenValidation:
        """Ask the service whether `access_token` may be trusted right now (sees revocation)."""
        response = await self._unary(
            self._stub.ValidateToken,
            pb.ValidateTokenRequest(access_token=access_token),
            self._service_credentials,
        )
        return token_validation(response)

    async def get_jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set that verifies access tokens offline (see TokenVerifier)."""
        response = await self._unary(
            self._stub.GetJwks, pb.GetJwksRequest(), self._service_credentials
        )
        jwks: dict[str, Any] = json.loads(response.jwks_json)
        return jwks

    async def watch_revocations(self, *, after_cursor: int = 0) -> AsyncGenerator[FeedEvent, None]:
        """The revocation feed (needs `service_key`): every ended session still relevant
        (`after_cursor` 0) or every one after `after_cursor`, then a Heartbeat, then live
        revocations and heartbeats, until you stop iterating or the stream fails.

        Has no deadline: a feed is meant to stay open. Failures raise the usual exceptions;
        resume after the last cursor seen, or from 0 on CURSOR_EXPIRED. TokenVerifier's
        subscription mode does all of that for you.
        """
        call = self._stub.WatchRevocations(
            pb.WatchRevocationsRequest(after_cursor=after_cursor),
            metadata=self._service_credentials,
        )
        try:
            async for message in call:
                event = feed_event(message)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()

    # --- internals ------------------------------------------------------------------------

    async def _rotate(self, refresh_token: str, idempotency_key: str) -> TokenPair:
        """The Refresh RPC alone; the TokenManager decides when and with which key, and
        keeps the result. The channel's own retries resend the same request, key included."""
        response = await self._unary(
            self._stub.Refresh,
            pb.RefreshRequest(refresh_token=refresh_token, idempotency_key=idempotency_key),
        )
        return token_pair(response)

    async def _call_as_session(
        self, method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req
    ) -> tuple[_Resp, uuid.UUID | None]:
        """Call `method` as the signed-in session, and say which session's access token went
        out, so that a new access token in the answer is adopted for that session only."""
        sent: list[uuid.UUID] = []

        async def invoke(token: str | None) -> _Resp:
            pair = await self._tokens.tokens()
            if pair is not None and pair.access_token == token:
                sent.append(pair.session_id)
            return await self._unary(method, request, _bearer(token))

        response = await self._tokens.call(invoke)
        return response, (sent[-1] if sent else None)

    async def _adopt_access_token(
        self, session_id: uuid.UUID | None, access_token: str, expires_at: datetime
    ) -> None:
        if session_id is not None and access_token:
            await self._tokens.adopt_access_token(session_id, access_token, expires_at)

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        metadata: _Metadata | None = None,
    ) -> _Resp:
        try:
            return await method(request, timeout=self._timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
