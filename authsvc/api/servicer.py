"""AuthService: each method maps protobuf to a SessionService call and back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import grpc

from authsvc.api import convert
from authsvc.api.caller import Caller
from authsvc.api.errors import internal_status, reason_of, status_for
from authsvc.api.factor_convert import (
    factor_proof,
    level_of_acr,
    pending_login_token,
    set_second_factor_step,
    with_tokens,
)
from authsvc.api.factor_rpcs import FactorRpcs
from authsvc.api.interceptors import note_subject
from authsvc.api.metadata import IpNetwork, has_metadata
from authsvc.api.passkey_rpcs import PasskeyRpcs
from authsvc.api.service_auth import ServiceGuard
from authsvc.core.errors import AuthError, InvalidArgument, SessionEnded
from authsvc.core.factors import SecondFactorStep
from authsvc.core.models import DeviceInfo, Principal, RequestOrigin
from authsvc.domain import validation
from authsvc.domain.access_tokens import VERIFIED_CACHE_SIZE
from authsvc.domain.password_resets import PasswordResets
from authsvc.domain.revocation_watch import Heartbeat, RevocationWatch
from authsvc.domain.sessions import SessionService
from authsvc.domain.signing_keys import KeyRing
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from authsvc.v1.second_factors_pb2 import ASSURANCE_LEVEL_AAL2

__all__ = ["AuthServicer", "OpenStreams"]

_log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext

_MAX_REFRESH_TOKEN_FIELD = 1024
_MAX_REVOKE_NOTE = 200


def _required_refresh_token(value: str) -> str:
    if not value:
        raise InvalidArgument("refresh_token", "refresh_token is required")
    if len(value) > _MAX_REFRESH_TOKEN_FIELD:
        raise InvalidArgument("refresh_token", "refresh_token is too long")
    return value


def _set_end(response: pb.ValidateTokenResponse, inactive: AuthError) -> None:
    """Why and when the token's session ended, when that is why it is inactive."""
    if isinstance(inactive, SessionEnded) and inactive.end_reason is not None:
        response.end_reason = convert.end_reason(inactive.end_reason)
        if inactive.ended_at is not None:
            convert.set_timestamp(response.ended_at, inactive.ended_at)


class OpenStreams:
    """WatchRevocations calls until each is over, its status sent, so that a graceful stop
    can wait for the last word of the streams it ended before it cancels what is left."""

    def __init__(self) -> None:
        self._open = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def opened(self, context: Context[Any, Any]) -> None:
        self._open += 1
        self._idle.clear()
        # types-grpcio declares the callback as a class of its own: any callable does.
        context.add_done_callback(cast(Any, self._closed))

    def _closed(self, _: object) -> None:
        self._open -= 1
        if not self._open:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class AuthServicer(pb_grpc.AuthServiceServicer):
    def __init__(
        self,
        sessions: SessionService,
        keys: KeyRing,
        *,
        trusted_proxies: Sequence[IpNetwork],
        services: ServiceGuard,
        revocations: RevocationWatch,
        streams: OpenStreams,
        resets: PasswordResets,
        factor_rpcs: FactorRpcs,
        passkey_rpcs: PasskeyRpcs,
        require_service_credentials: bool = False,
    ) -> None:
        self._caller = Caller(sessions, trusted_proxies)
        self._factor_rpcs = factor_rpcs
        self._passkey_rpcs = passkey_rpcs
        self._sessions = sessions
        self._keys = keys
        self._trusted_proxies = tuple(trusted_proxies)
        # WatchRevocations always asks it; ValidateToken and GetJwks when configured to.
        self._services = services
        self._require_service_credentials = require_service_credentials
        self._principal_parts: OrderedDict[str, bytes] = OrderedDict()
        self._revocations = revocations
        self._streams = streams
        self._resets = resets

    def _device(self, context: Context[Any, Any], device_name: str) -> DeviceInfo:
        return self._caller.device(context, device_name)

    def _origin(self, context: Context[Any, Any]) -> RequestOrigin:
        return self._caller.origin(context)

    async def _authenticate(self, context: Context[Any, Any]) -> Principal:
        return await self._caller.authenticate(context)

    async def Register(
        self, request: pb.RegisterRequest, context: Context[pb.RegisterRequest, pb.RegisterResponse]
    ) -> pb.RegisterResponse:
        tokens = await self._sessions.register(
            email=request.email,
            password=request.password,
            display_name=request.display_name,
            remember_me=request.remember_me,
            device=self._device(context, request.device_name),
        )
        # None: the same empty answer for a new and a taken email (docs/accounts.md).
        if tokens is None:
            return pb.RegisterResponse()
        if isinstance(tokens, SecondFactorStep):
            response = pb.RegisterResponse()
            set_second_factor_step(response.second_factor, tokens)
            return response
        return with_tokens(pb.RegisterResponse(), tokens)

    async def Login(
        self, request: pb.LoginRequest, context: Context[pb.LoginRequest, pb.LoginResponse]
    ) -> pb.LoginResponse:
        tokens = await self._sessions.login(
            email=request.email,
            password=request.password,
            remember_me=request.remember_me,
            device=self._device(context, request.device_name),
        )
        if isinstance(tokens, SecondFactorStep):
            # The password was right; the tokens wait for the second step.
            response = pb.LoginResponse()
            set_second_factor_step(response.second_factor, tokens)
            return response
        return with_tokens(pb.LoginResponse(), tokens)

    async def Refresh(
        self, request: pb.RefreshRequest, context: Context[pb.RefreshRequest, pb.RefreshResponse]
    ) -> pb.RefreshResponse:
        tokens = await self._sessions.refresh(
            _required_refresh_token(request.refresh_token),
            self._origin(context),
            idempotency_key=request.idempotency_key,
        )
        return with_tokens(pb.RefreshResponse(), tokens)

    async def Logout(
        self, request: pb.LogoutRequest, context: Context[pb.LogoutRequest, pb.LogoutResponse]
    ) -> pb.LogoutResponse:
        scope = convert.logout_scope(request.scope)
        if request.refresh_token and not has_metadata(context, "authorization"):
            count = await self._sessions.logout_with_refresh_token(
                _required_refresh_token(request.refresh_token), scope, self._origin(context)
            )
        else:
            principal = await self._authenticate(context)
            count = await self._sessions.logout(principal, scope, self._origin(context))
        return pb.LogoutResponse(revoked_session_count=count)

    async def ListSessions(
        self,
        request: pb.ListSessionsRequest,
        context: Context[pb.ListSessionsRequest, pb.ListSessionsResponse],
    ) -> pb.ListSessionsResponse:
        # Credentials first: a caller who may not list learns nothing about the fields.
        principal = await self._authenticate(context)
        size = convert.page_size(request.page_size)
        after = convert.decode_page_token(principal.user_id, request.page_token)
        page = await self._sessions.list_sessions(principal, page_size=size, after=after)
        response = pb.ListSessionsResponse()
        for session in page.sessions:
            convert.add_session(response.sessions, session, current=principal.session_id)
        if page.next_cursor is not None:
            response.next_page_token = convert.encode_page_token(
                principal.user_id, page.next_cursor
            )
        return response

    async def RevokeSession(
        self,
        request: pb.RevokeSessionRequest,
        context: Context[pb.RevokeSessionRequest, pb.RevokeSessionResponse],
    ) -> pb.RevokeSessionResponse:
        principal = await self._authenticate(context)
        session_id = convert.parse_session_id(request.session_id)
        note = validation.clean_label("reason", request.reason, max_length=_MAX_REVOKE_NOTE)
        await self._sessions.revoke_session(principal, session_id, note, self._origin(context))
        return pb.RevokeSessionResponse()

    async def GetSession(
        self,
        request: pb.GetSessionRequest,
        context: Context[pb.GetSessionRequest, pb.GetSessionResponse],
    ) -> pb.GetSessionResponse:
        principal = await self._authenticate(context)
        session_id = convert.parse_session_id(request.session_id)
        session, end = await self._sessions.get_session(principal, session_id)
        return pb.GetSessionResponse(
            session=convert.session_message(
                session, end, current=session.id == principal.session_id
            )
        )

    async def ValidateToken(
        self,
        request: pb.ValidateTokenRequest,
        context: Context[pb.ValidateTokenRequest, pb.ValidateTokenResponse],
    ) -> pb.ValidateTokenResponse:
        if self._require_service_credentials:
            self._services.require(context)
        if not request.access_token:
            raise InvalidArgument("access_token", "access_token is required")
        result = await self._sessions.validate(request.access_token)
        if result.principal is None:
            response = pb.ValidateTokenResponse()
        else:
            principal = result.principal
            note_subject(principal.user_id, principal.session_id)
            response = pb.ValidateTokenResponse.FromString(
                self._principal_part(request.access_token, principal)
            )
        response.active = result.active
        if result.inactive is not None:
            response.inactive_reason = reason_of(result.inactive)
            _set_end(response, result.inactive)
        return response

    def _principal_part(self, token: str, principal: Principal) -> bytes:
        """The principal's fields of a ValidateTokenResponse, serialized, remembered per
        token: they follow from the token alone, and building the claims Struct anew
        cost most of the answer (parsing these bytes is a seventh of that)."""
        part = self._principal_parts.get(token)
        if part is None:
            message = pb.ValidateTokenResponse(
                user_id=str(principal.user_id), session_id=str(principal.session_id)
            )
            convert.set_timestamp(message.expires_at, principal.expires_at)
            convert.set_timestamp(message.issued_at, principal.issued_at)
            message.claims.CopyFrom(convert.struct_of(principal.claims))
            message.assurance_level = level_of_acr(principal.claims.get("acr"))
            amr = principal.claims.get("amr")
            if isinstance(amr, list):
                message.amr.extend(str(method) for method in amr)
            part = message.SerializeToString()
            self._principal_parts[token] = part
            # Only tokens whose signature verified get here, as into that cache.
            if len(self._principal_parts) > VERIFIED_CACHE_SIZE:
                self._principal_parts.popitem(last=False)
        else:
            self._principal_parts.move_to_end(token)
        return part

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: Context[pb.GetJwksRequest, pb.GetJwksResponse]
    ) -> pb.GetJwksResponse:
        if self._require_service_credentials:
            self._services.require(context)
        return pb.GetJwksResponse(jwks_json=self._keys.jwks_json())

    async def ChangePassword(
        self,
        request: pb.ChangePasswordRequest,
        context: Context[pb.ChangePasswordRequest, pb.ChangePasswordResponse],
    ) -> pb.ChangePasswordResponse:
        principal = await self._authenticate(context)
        count = await self._sessions.change_password(
            principal,
            current_password=request.current_password,
            new_password=request.new_password,
            origin=self._origin(context),
        )
        return pb.ChangePasswordResponse(revoked_session_count=count)

    async def ResetPassword(
        self,
        request: pb.ResetPasswordRequest,
        context: Context[pb.ResetPasswordRequest, pb.ResetPasswordResponse],
    ) -> pb.ResetPasswordResponse:
        if not request.reset_token:
            raise InvalidArgument("reset_token", "reset_token is required")
        if len(request.reset_token) > _MAX_REFRESH_TOKEN_FIELD:
            raise InvalidArgument("reset_token", "reset_token is too long")
        count = await self._resets.reset_password(
            reset_token=request.reset_token,
            new_password=request.new_password,
            origin=self._origin(context),
        )
        return pb.ResetPasswordResponse(revoked_session_count=count)

    async def WatchRevocations(
        self,
        request: pb.WatchRevocationsRequest,
        context: Context[pb.WatchRevocationsRequest, pb.WatchRevocationsResponse],
    ) -> AsyncIterator[pb.WatchRevocationsResponse]:
        # The edge interceptor wraps unary calls only: this stream answers its own errors
        # and writes its own log line.
        self._streams.opened(context)
        service = await self._services.require_on_stream(context)
        # Read now: once the call is torn down its context must not be touched.
        peer = context.peer()
        started = time.perf_counter()
        cursor = request.after_cursor
        status: grpc.Status | None = None
        reason = ""
        try:
            async with self._revocations.watch(request.after_cursor) as events:
                async for event in events:
                    cursor = event.cursor
                    if isinstance(event, Heartbeat):
                        yield convert.heartbeat_response(event.cursor, event.sent_at)
                    else:
                        yield convert.revocation_response(
                            event, tokens_expire_by=self._revocations.tokens_expire_by(event)
                        )
        except AuthError as exc:
            status, reason = status_for(exc), reason_of(exc)
        except Exception:
            _log.exception(
                "unhandled error", extra={"event": "rpc_error", "rpc": "WatchRevocations"}
            )
            status, reason = internal_status(), "INTERNAL"
        finally:
            # Also when the subscriber went away (cancelled): how long it watched, how far.
            _log.info(
                "revocation stream ended",
                extra={
                    "event": "revocation_stream_ended",
                    "service": service.name,
                    "peer": peer,
                    "code": "CANCELLED" if status is None else status.code.name,
                    "reason": reason,
                    "cursor": cursor,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        if status is not None and not context.done():
            await context.abort(status.code, status.details, status.trailing_metadata)

    # --- assurance: two-step login and step-up -------------------------------

    async def CompleteLogin(
        self, request: pb.CompleteLoginRequest, context: Context[Any, Any]
    ) -> pb.CompleteLoginResponse:
        token = pending_login_token(request.pending_login_token, required=True)
        proof = factor_proof(request.proof)
        tokens = await self._sessions.complete_login_with(token, proof, self._origin(context))
        return with_tokens(pb.CompleteLoginResponse(), tokens)

    async def StepUp(
        self, request: pb.StepUpRequest, context: Context[Any, Any]
    ) -> pb.StepUpResponse:
        principal = await self._authenticate(context)
        proof = factor_proof(request.proof)
        stepped = await self._sessions.step_up_with(principal, proof, self._origin(context))
        response = pb.StepUpResponse(
            access_token=stepped.access_token, assurance_level=ASSURANCE_LEVEL_AAL2
        )
        convert.set_timestamp(response.access_token_expires_at, stepped.access_token_expires_at)
        convert.set_timestamp(response.step_up_expires_at, stepped.step_up_expires_at)
        return response

    # --- second factors: api/factor_rpcs.py ----------------------------------

    async def ListFactors(
        self, request: pb.ListFactorsRequest, context: Context[Any, Any]
    ) -> pb.ListFactorsResponse:
        return await self._factor_rpcs.ListFactors(request, context)

    async def EnrolTotp(
        self, request: pb.EnrolTotpRequest, context: Context[Any, Any]
    ) -> pb.EnrolTotpResponse:
        return await self._factor_rpcs.EnrolTotp(request, context)

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: Context[Any, Any]
    ) -> pb.ConfirmTotpResponse:
        return await self._factor_rpcs.ConfirmTotp(request, context)

    async def RemoveFactor(
        self, request: pb.RemoveFactorRequest, context: Context[Any, Any]
    ) -> pb.RemoveFactorResponse:
        return await self._factor_rpcs.RemoveFactor(request, context)

    async def RegenerateRecoveryCodes(
        self, request: pb.RegenerateRecoveryCodesRequest, context: Context[Any, Any]
    ) -> pb.RegenerateRecoveryCodesResponse:
        return await self._factor_rpcs.RegenerateRecoveryCodes(request, context)

    # --- passkeys: api/passkey_rpcs.py ---------------------------------------

    async def BeginPasskeyRegistration(
        self, request: pb.BeginPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.BeginPasskeyRegistrationResponse:
        return await self._passkey_rpcs.BeginPasskeyRegistration(request, context)

    async def FinishPasskeyRegistration(
        self, request: pb.FinishPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.FinishPasskeyRegistrationResponse:
        return await self._passkey_rpcs.FinishPasskeyRegistration(request, context)

    async def BeginPasskeyAssertion(
        self, request: pb.BeginPasskeyAssertionRequest, context: Context[Any, Any]
    ) -> pb.BeginPasskeyAssertionResponse:
        return await self._passkey_rpcs.BeginPasskeyAssertion(request, context)

    async def PasskeyLogin(
        self, request: pb.PasskeyLoginRequest, context: Context[Any, Any]
    ) -> pb.PasskeyLoginResponse:
        return await self._passkey_rpcs.PasskeyLogin(request, context)
