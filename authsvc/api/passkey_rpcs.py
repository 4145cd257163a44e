"""AuthService's passkey (WebAuthn) RPCs (docs/second-factors.md, "Passkeys").

Who may call: registration needs the caller's access token after a recent step-up, or the
pending login token of a login that must enrol; BeginPasskeyAssertion takes a pending
login token (CompleteLogin), an access token (StepUp) or nothing (PasskeyLogin);
PasskeyLogin takes nothing but the assertion, and is throttled as Login. Each costs a few
single-row statements and one signature check; nothing answered names another account.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from authsvc.api import convert
from authsvc.api.caller import Caller, Context
from authsvc.api.factor_messages import factor_message
from authsvc.api.metadata import has_metadata
from authsvc.core.errors import InvalidArgument, PasskeysDisabled
from authsvc.core.factors import PasskeyAssertion
from authsvc.core.models import IssuedTokens, Principal
from authsvc.domain import validation
from authsvc.domain.factor_ports import PendingLogin, SessionAssurance, SteppedUp
from authsvc.domain.passkeys import MAX_CREDENTIAL_JSON, PasskeyOptions, PasskeyService
from authsvc.v1 import auth_service_pb2 as pb

__all__ = ["PasskeyRpcs"]

# As api/servicer.py's TOKEN_TYPE (which imports this module, so it cannot be imported here).
TOKEN_TYPE = "Bearer"  # noqa: S105 (a scheme name, not a secret)
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
        if request.pending_login_token:
            pending = await self._pending(request.pending_login_token, for_enrolment=True)
            user_id, binding = pending.user_id, pending.id
        else:
            principal = await self._stepped_up(context)
            user_id, binding = principal.user_id, principal.session_id
        options = await self._passkeys.begin_registration(user_id, binding=binding, name=name)
        return _with_options(pb.BeginPasskeyRegistrationResponse(), options)

    async def FinishPasskeyRegistration(
        self, request: pb.FinishPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.FinishPasskeyRegistrationResponse:
        self._require_enabled()
        challenge_id = _challenge_id(request.challenge_id)
        credential_json = _credential_json(request.credential_json)
        pending: PendingLogin | None = None
        principal: Principal | None = None
        if request.pending_login_token:
            pending = await self._pending(request.pending_login_token, for_enrolment=True)
            user_id, binding = pending.user_id, pending.id
        else:
            principal = await self._stepped_up(context)
            user_id, binding = principal.user_id, principal.session_id
        registered = await self._passkeys.finish_registration(
            user_id,
            challenge_id,
            credential_json,
            binding=binding,
            keep=None if principal is None else principal.session_id,
            origin=self._caller.origin(context),
        )
        response = pb.FinishPasskeyRegistrationResponse(
            factor=factor_message(registered.factor), recovery_codes=registered.recovery_codes
        )
        if pending is not None:
            tokens = await self._assurance.complete_login(pending, registered.verified)
            _signed_in_with_tokens(response.signed_in, tokens)
        elif principal is not None:
            stepped = await self._assurance.step_up(principal, registered.verified)
            _signed_in_stepped_up(response.signed_in, principal, stepped)
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
        assertion = PasskeyAssertion(
            challenge_id=_challenge_id(request.assertion.challenge_id, "assertion.challenge_id"),
            credential_json=_credential_json(
                request.assertion.credential_json, "assertion.credential_json"
            ),
        )
        tokens = await self._passkeys.passkey_login(
            assertion,
            remember_me=request.remember_me,
            device=self._caller.device(context, request.device_name),
            origin=self._caller.origin(context),
        )
        response = pb.PasskeyLoginResponse(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            session_id=str(tokens.session_id),
            user_id=str(tokens.user_id),
            token_type=TOKEN_TYPE,
        )
        response.access_token_expires_at.CopyFrom(convert.timestamp(tokens.access_token_expires_at))
        response.refresh_token_expires_at.CopyFrom(
            convert.timestamp(tokens.refresh_token_expires_at)
        )
        return response

    def _require_enabled(self) -> None:
        if not self._passkeys.enabled:
            raise PasskeysDisabled("passkeys are not configured on this server")

    async def _pending(self, token: str, *, for_enrolment: bool) -> PendingLogin:
        return await self._assurance.pending_login(token, for_enrolment=for_enrolment)

    async def _stepped_up(self, context: Context[Any, Any]) -> Principal:
        principal = await self._caller.authenticate(context)
        await self._assurance.require_step_up(principal)
        return principal


def _challenge_id(value: str, field: str = "challenge_id") -> uuid.UUID:
    """The canonical UUID form only, as user, session and factor ids."""
    challenge_id: uuid.UUID = convert.parse_user_id(value, field)
    return challenge_id


def _credential_json(value: str, field: str = "credential_json") -> str:
    if not value:
        raise InvalidArgument(field, f"{field} is required")
    if len(value) > MAX_CREDENTIAL_JSON:
        raise InvalidArgument(field, f"{field} is too large")
    return value


def _with_options(response: _Options, options: PasskeyOptions) -> _Options:
    response.challenge_id = str(options.challenge_id)
    response.options_json = options.options_json
    response.expires_at.CopyFrom(convert.timestamp(options.expires_at))
    return response


def _signed_in_with_tokens(signed_in: pb.SignedIn, tokens: IssuedTokens) -> None:
    signed_in.access_token = tokens.access_token
    signed_in.access_token_expires_at.CopyFrom(convert.timestamp(tokens.access_token_expires_at))
    signed_in.refresh_token = tokens.refresh_token
    signed_in.refresh_token_expires_at.CopyFrom(convert.timestamp(tokens.refresh_token_expires_at))
    signed_in.session_id = str(tokens.session_id)
    signed_in.user_id = str(tokens.user_id)
    signed_in.token_type = TOKEN_TYPE


def _signed_in_stepped_up(signed_in: pb.SignedIn, principal: Principal, stepped: SteppedUp) -> None:
    signed_in.access_token = stepped.access_token
    signed_in.access_token_expires_at.CopyFrom(convert.timestamp(stepped.access_token_expires_at))
    signed_in.session_id = str(principal.session_id)
    signed_in.user_id = str(principal.user_id)
    signed_in.token_type = TOKEN_TYPE
