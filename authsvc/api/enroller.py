"""Who adds a factor: the caller's session, or a pending login that must enrol first."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from authsvc.api import factor_convert
from authsvc.api.caller import Caller, Context
from authsvc.api.interceptors import note_subject
from authsvc.core.factors import VerifiedFactor
from authsvc.core.models import Principal, UserId
from authsvc.domain.factor_ports import PendingLogin, SessionAssurance
from authsvc.v1 import auth_service_pb2 as pb

__all__ = ["Enroller", "enroller"]


@dataclass(frozen=True, slots=True)
class Enroller:
    """Exactly one of the two is set."""

    principal: Principal | None
    pending: PendingLogin | None

    @property
    def user_id(self) -> UserId:
        if self.pending is not None:
            return self.pending.user_id
        assert self.principal is not None
        return self.principal.user_id

    @property
    def binding(self) -> uuid.UUID:
        """What a passkey challenge for this enrolment is bound to."""
        if self.pending is not None:
            return self.pending.id
        assert self.principal is not None
        return self.principal.session_id

    async def signed_in(
        self, assurance: SessionAssurance, verified: VerifiedFactor, answer: pb.SignedIn
    ) -> None:
        """The factor just added proved its holder: the pending login becomes a session,
        or the caller's session is raised to AAL2; `answer` gets its tokens."""
        if self.pending is not None:
            tokens = await assurance.complete_login(self.pending, verified)
            factor_convert.with_tokens(answer, tokens)
        else:
            assert self.principal is not None
            stepped = await assurance.step_up(self.principal, verified)
            factor_convert.set_stepped_up(answer, self.principal, stepped)


async def enroller(
    caller: Caller,
    assurance: SessionAssurance,
    pending_login_token: str,
    context: Context[Any, Any],
    *,
    step_up: bool,
) -> Enroller:
    """A pending login that must enrol, given its token; else the caller's session, by its
    access token, which must have stepped up recently when `step_up` (adding a factor is
    sensitive: a stolen access token alone must not do it)."""
    if pending_login_token:
        token = factor_convert.pending_login_token(pending_login_token, required=True)
        pending = await assurance.pending_login(token, for_enrolment=True)
        note_subject(pending.user_id, "")
        return Enroller(principal=None, pending=pending)
    principal = await caller.authenticate(context)
    if step_up:
        await assurance.require_step_up(principal)
    return Enroller(principal=principal, pending=None)
