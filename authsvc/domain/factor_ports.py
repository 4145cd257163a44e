"""The seams between second factors (domain/factors.py, domain/passkeys.py) and sessions
(domain/sessions.py): each side sees the other only through these Protocols, wired in app.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from authsvc.core.factors import (
    FactorKind,
    FactorProof,
    PasskeyAssertion,
    StoredPendingLogin,
    VerifiedFactor,
)
from authsvc.core.models import DeviceInfo, IssuedTokens, Principal, RequestOrigin, UserId

__all__ = [
    "PasskeyVerifier",
    "PendingLogin",
    "SecondFactors",
    "SessionAssurance",
    "SteppedUp",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingLogin:
    """A login whose password was right and that awaits its second step."""

    id: uuid.UUID
    user_id: UserId
    email: str
    expires_at: datetime
    # The account must enrol a factor first (policy or an operator's mark).
    enrolment_required: bool
    # Where the login came from: the session it becomes is on that device.
    origin: RequestOrigin
    # All that is kept of it (sessions' business).
    stored: StoredPendingLogin


@dataclass(frozen=True, slots=True, kw_only=True)
class SteppedUp:
    """A session whose level a factor just raised, with an access token that says so."""

    access_token: str
    access_token_expires_at: datetime
    step_up_expires_at: datetime


class SecondFactors(Protocol):
    """The user's factors, as sessions need them (domain/factors.py)."""

    async def factor_kinds(self, user_id: UserId) -> frozenset[FactorKind]:
        """The kinds of the user's confirmed factors, RECOVERY_CODE while unused codes are
        left; empty for a user without a second factor."""
        ...

    async def verify(
        self,
        user_id: UserId,
        email: str,
        proof: FactorProof,
        *,
        origin: RequestOrigin,
        binding: uuid.UUID,
    ) -> VerifiedFactor:
        """Verify one proof, throttled like Login for `email` and the origin's address (a
        wrong one counts as a failed login). `binding` is what a passkey challenge must have
        been issued for: the pending login's id, or the session's id for a step-up.
        Raises SecondFactorInvalid, RateLimited, PasskeyChallengeInvalid."""
        ...


class PasskeyVerifier(Protocol):
    """Passkey assertions, for SecondFactors.verify (domain/passkeys.py)."""

    async def verify_assertion(
        self, user_id: UserId, assertion: PasskeyAssertion, *, binding: uuid.UUID | None
    ) -> VerifiedFactor:
        """Verify an assertion against the user's passkeys and a challenge issued for
        `binding` (None: a challenge for PasskeyLogin). Consumes the challenge. Raises
        SecondFactorInvalid, PasskeyChallengeInvalid."""
        ...


class SessionAssurance(Protocol):
    """What factors ask of sessions (domain/sessions.py)."""

    async def require_step_up(self, principal: Principal) -> None:
        """Raise StepUpRequired unless the caller's session may do a sensitive thing now: a
        factor verified in it within the step-up window, or, for a user without a factor, a
        session that signed in within the window."""
        ...

    async def step_up(self, principal: Principal, verified: VerifiedFactor) -> SteppedUp:
        """Record a verified factor in the caller's session (AAL2, step-up time now)."""
        ...

    async def pending_login(self, token: str, *, for_enrolment: bool) -> PendingLogin:
        """The live pending login `token` names. `for_enrolment`: the enrolment RPCs, which
        only a login with enrolment_required may use; CompleteLogin otherwise. Raises
        PendingLoginInvalid."""
        ...

    async def complete_login(self, pending: PendingLogin, verified: VerifiedFactor) -> IssuedTokens:
        """Turn a pending login into a session at AAL2 with the password and `verified`, on
        the device the login came from; the pending login is used up. Raises
        PendingLoginInvalid if it was used meanwhile."""
        ...

    async def passkey_login(
        self, user_id: UserId, verified: VerifiedFactor, *, remember_me: bool, device: DeviceInfo
    ) -> IssuedTokens:
        """Start a session at AAL2 for a passkey alone (user verification required)."""
        ...
