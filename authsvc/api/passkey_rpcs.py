"""AuthService's passkey (WebAuthn) RPCs (docs/second-factors.md, "Passkeys").

Who may call: registration needs the caller's access token after a recent step-up, or the
pending login token of a login that must enrol; BeginPasskeyAssertion takes a pending
login token (CompleteLogin), an access token (StepUp) or nothing (PasskeyLogin);
PasskeyLogin takes nothing but the assertion, and is throttled as Login. Each costs a few
single-row statements and one signature check; nothing answered names another account.
"""

from __future__ import annotations

from typing import Any, TypeVar

from authsvc.api import convert, factor_convert
from authsvc.api.caller import Caller, Context
from authsvc.api.enroller import Enroller, enroller
from authsvc.api.factor_convert import passkey_assertion, with_tokens
from authsvc.api.factor_messages import factor_message
from authsvc.api.metadata import has_metadata
from authsvc.core.errors import PasskeysDisabled
from authsvc.domain import validation
from authsvc.domain.factor_ports import PendingLogin, SessionAssurance
from authsvc.domain.passkeys import PasskeyOptions, PasskeyService
from authsvc.v1 import auth_service_pb2 as pb

__all__ = ["PasskeyRpcs"]

_Options = TypeVar(
    "_Options", pb.BeginPasskeyRegistrationResponse, pb.BeginPasskeyAssertionResponse
)


class PasskeyRpcs:
    def __init__(
        self, caller: Caller, passkeys: PasskeyService, assurance: SessionAssurance
    ) -> None:
        self._caller = caller
        self._passkeys = passkeys
        self._assurance = assurance

    async def BeginPasskeyRegistration(
        self, request: pb.BeginPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.BeginPasskeyRegistrationResponse:
        self._require_enabled()
        name = validation.clean_label("name", request.name, max_length=validation.MAX_LABEL_LENGTH)
        enrolling = await self._enroller(request.pending_login_token, context)
        options = await self._passkeys.begin_registration(
            enrolling.user_id, binding=enrolling.binding, name=name
        )
        return _with_options(pb.BeginPasskeyRegistrationResponse(), options)

    async def FinishPasskeyRegistration(
        self, request: pb.FinishPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.FinishPasskeyRegistrationResponse:
        self._require_enabled()
        challenge_id = factor_convert.challenge_id(request.challenge_id)
        credential_json = factor_convert.credential_json(request.credential_json)
        enrolling = await self._enroller(request.pending_login_token, context)
        principal = enrolling.principal
        registered = await self._passkeys.finish_registration(
            enrolling.user_id,
            challenge_id,
            credential_json,
            binding=enrolling.binding,
            keep=None if principal is None else principal.session_id,
            origin=self._caller.origin(context),
        )
        response = pb.FinishPasskeyRegistrationResponse(
            factor=factor_message(registered.factor), recovery_codes=registered.recovery_codes
        )
        await enrolling.signed_in(self._assurance, registered.verified, response.signed_in)
        return response

    async def BeginPasskeyAssertion(
        self, request: pb.BeginPasskeyAssertionRequest, context: Context[Any, Any]
    ) -> pb.BeginPasskeyAssertionResponse:
        self._require_enabled()
        if request.pending_login_token:
            pending = await self._pending(request.pending_login_token, for_enrolment=False)
            options = await self._passkeys.begin_assertion(pending.user_id, binding=pending.id)
        elif has_metadata(context, "authorization"):
            principal = await self._caller.authenticate(context)
            options = await self._passkeys.begin_assertion(
                principal.user_id, binding=principal.session_id
            )
        else:
            options = await self._passkeys.begin_assertion(None, binding=None)
        return _with_options(pb.BeginPasskeyAssertionResponse(), options)

    async def PasskeyLogin(
        self, request: pb.PasskeyLoginRequest, context: Context[Any, Any]
    ) -> pb.PasskeyLoginResponse:
        self._require_enabled()
        assertion = passkey_assertion(request.assertion)
        tokens = await self._passkeys.passkey_login(
            assertion,
            remember_me=request.remember_me,
            device=self._caller.device(context, request.device_name),
            origin=self._caller.origin(context),
        )
        return with_tokens(pb.PasskeyLoginResponse(), tokens)

    def _require_enabled(self) -> None:
        if not self._passkeys.enabled:
            raise PasskeysDisabled("passkeys are not configured on this server")

    async def _pending(self, token: str, *, for_enrolment: bool) -> PendingLogin:
        return await self._assurance.pending_login(token, for_enrolment=for_enrolment)

    async def _enroller(self, pending_login_token: str, context: Context[Any, Any]) -> Enroller:
        return await enroller(
            self._caller, self._assurance, pending_login_token, context, step_up=True
        )


def _with_options(response: _Options, options: PasskeyOptions) -> _Options:
    response.challenge_id = str(options.challenge_id)
    response.options_json = options.options_json
    response.expires_at.CopyFrom(convert.timestamp(options.expires_at))
    return response
