"""AuthService's second-factor RPCs: TOTP, recovery codes, listing and removal.

Who may call: the user, by an access token of a live session; EnrolTotp and ConfirmTotp
also by a pending login that must enrol first (`pending_login_token`). Adding a factor
in a session, removing one and regenerating the codes need a recent step-up
(STEP_UP_REQUIRED). Codes are checked under the login throttle (domain/factors.py).
Secrets (the TOTP secret and URI, recovery codes, tokens) appear only in the response
that carries them and are never logged.
"""

from __future__ import annotations

from typing import Any

from authsvc.api import convert
from authsvc.api.caller import Caller, Context
from authsvc.api.enroller import Enroller, enroller
from authsvc.api.factor_messages import factor_message, parse_factor_id, set_factor_list
from authsvc.core.errors import InvalidArgument
from authsvc.domain import totp, validation
from authsvc.domain.factor_ports import SessionAssurance
from authsvc.domain.factors import FactorService
from authsvc.v1 import auth_service_pb2 as pb

__all__ = ["FactorRpcs"]


class FactorRpcs:
    def __init__(self, caller: Caller, factors: FactorService, assurance: SessionAssurance) -> None:
        self._caller = caller
        self._factors = factors
        self._assurance = assurance

    async def ListFactors(
        self, request: pb.ListFactorsRequest, context: Context[Any, Any]
    ) -> pb.ListFactorsResponse:
        principal = await self._caller.authenticate(context)
        listed = await self._factors.list_factors(principal.user_id)
        response = pb.ListFactorsResponse()
        set_factor_list(response, listed)
        return response

    async def EnrolTotp(
        self, request: pb.EnrolTotpRequest, context: Context[Any, Any]
    ) -> pb.EnrolTotpResponse:
        enrolling = await self._enroller(request.pending_login_token, context, step_up=True)
        name = validation.clean_label("name", request.name, max_length=validation.MAX_LABEL_LENGTH)
        enrolment = await self._factors.enrol_totp(
            enrolling.user_id, await self._email(enrolling), name=name
        )
        response = pb.EnrolTotpResponse(
            factor_id=str(enrolment.factor_id),
            secret=enrolment.secret,
            provisioning_uri=enrolment.provisioning_uri,
        )
        convert.set_timestamp(response.expires_at, enrolment.expires_at)
        return response

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: Context[Any, Any]
    ) -> pb.ConfirmTotpResponse:
        # The step-up was asked for by EnrolTotp, which alone gives out the secret.
        enrolling = await self._enroller(request.pending_login_token, context, step_up=False)
        factor_id = parse_factor_id(request.factor_id)
        if not totp.is_code_shaped(request.code):
            raise InvalidArgument("code", f"code must be {totp.DIGITS} digits")
        principal = enrolling.principal
        confirmed = await self._factors.confirm_totp(
            enrolling.user_id,
            await self._email(enrolling),
            factor_id,
            request.code,
            origin=self._caller.origin(context),
            session_id=None if principal is None else principal.session_id,
        )
        response = pb.ConfirmTotpResponse(
            factor=factor_message(confirmed.factor), recovery_codes=confirmed.recovery_codes
        )
        await enrolling.signed_in(self._assurance, confirmed.verified, response.signed_in)
        return response

    async def RemoveFactor(
        self, request: pb.RemoveFactorRequest, context: Context[Any, Any]
    ) -> pb.RemoveFactorResponse:
        principal = await self._caller.authenticate(context)
        factor_id = parse_factor_id(request.factor_id)
        await self._assurance.require_step_up(principal)
        count = await self._factors.remove_factor(
            principal.user_id,
            factor_id,
            origin=self._caller.origin(context),
            session_id=principal.session_id,
        )
        return pb.RemoveFactorResponse(revoked_session_count=count)

    async def RegenerateRecoveryCodes(
        self, request: pb.RegenerateRecoveryCodesRequest, context: Context[Any, Any]
    ) -> pb.RegenerateRecoveryCodesResponse:
        principal = await self._caller.authenticate(context)
        await self._assurance.require_step_up(principal)
        codes, count = await self._factors.regenerate_recovery_codes(
            principal.user_id,
            origin=self._caller.origin(context),
            session_id=principal.session_id,
        )
        return pb.RegenerateRecoveryCodesResponse(recovery_codes=codes, revoked_session_count=count)

    async def _enroller(
        self, pending_login_token: str, context: Context[Any, Any], *, step_up: bool
    ) -> Enroller:
        return await enroller(
            self._caller, self._assurance, pending_login_token, context, step_up=step_up
        )

    async def _email(self, enrolling: Enroller) -> str:
        if enrolling.pending is not None:
            return enrolling.pending.email
        return await self._factors.account_email(enrolling.user_id)
