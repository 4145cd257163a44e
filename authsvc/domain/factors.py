"""A user's second factors: TOTP enrolment and verification, recovery codes, listing and
removal, by the user and by operators (docs/second-factors.md).

Every verification of a code is throttled as a password is (the LoginThrottle's
`attempt` for the account's email and the client address): a wrong code counts as a
failed login, so the login lock caps guesses at a second factor as it does at the
password. Every change of a user's factors ends the user's other sessions
(SECOND_FACTOR_CHANGED) and is audited, in the transaction of the change.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn, Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import (
    FactorAlreadyEnrolled,
    FactorNotFound,
    SecondFactorInvalid,
    SessionRevoked,
    UserNotFound,
)
from authsvc.core.factors import FactorKind, FactorProof, VerifiedFactor
from authsvc.core.models import (
    Account,
    AuditEvent,
    Operator,
    RequestOrigin,
    SealedSecret,
    SessionEnder,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.core.user_factors import Factor, FactorChange, FactorList, StoredTotp
from authsvc.domain import recovery_codes, totp
from authsvc.domain.admin import AdminEvent, admin_event, admin_reason
from authsvc.domain.factor_ports import PasskeyVerifier
from authsvc.domain.key_encryption import KeyWrapper, open_secret, seal_secret
from authsvc.domain.session_endings import SessionEndings
from authsvc.domain.throttle import LoginAttempt, LoginThrottle

__all__ = [
    "ENROLMENT_LIFETIME",
    "ConfirmedTotp",
    "FactorEvent",
    "FactorService",
    "FactorStore",
    "TotpEnrolment",
]

_log = logging.getLogger(__name__)

# How long an EnrolTotp's secret waits for its ConfirmTotp; the sweeper deletes it after.
ENROLMENT_LIFETIME = timedelta(minutes=10)


class FactorEvent(enum.StrEnum):
    """The audit events of the user's own factor changes and verifications."""

    ENROLLED = "factor_enrolled"
    REMOVED = "factor_removed"
    RECOVERY_CODES_REGENERATED = "recovery_codes_regenerated"
    FAILED = "second_factor_failed"
    VERIFIED = "second_factor_verified"


class FactorStore(Protocol):
    """The factor tables (user_factors, recovery_codes). Every method raises
    DatabaseUnavailable when the database cannot be reached in time; then nothing it
    would have written is written. A method given an `event` records it in the
    transaction of its change, and only if there was a change."""

    async def user_email(self, user_id: UserId) -> str | None:
        """The account's email; None if there is no such account."""
        ...

    async def add_totp_enrolment(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        name: str,
        sealed_secret: SealedSecret,
        now: datetime,
        expires_at: datetime,
    ) -> bool:
        """Store an unconfirmed TOTP enrolment, dropping the user's earlier unconfirmed
        ones. False, with nothing written, if the user has a confirmed TOTP already."""
        ...

    async def find_totp(self, user_id: UserId, factor_id: uuid.UUID | None) -> StoredTotp | None:
        """The user's TOTP row `factor_id`, confirmed or not; with None, the user's
        confirmed TOTP. None if there is none."""
        ...

    async def confirm_totp(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        step: int,
        now: datetime,
        first_codes: list[bytes],
        keep: SessionId | None,
        event: AuditEvent,
    ) -> FactorChange | None:
        """Confirm the enrolment if it is unconfirmed and unexpired at `now`, its last
        step `step` (used up); if the user had no other confirmed factor, replace the
        recovery codes by `first_codes` (hashes). End the user's sessions but `keep`
        (SECOND_FACTOR_CHANGED, by the user from `keep`), recording `event` as
        `end_user_sessions` does. None, nothing written, if there is no such enrolment;
        FactorAlreadyEnrolled if another TOTP of the user was confirmed meanwhile."""
        ...

    async def accept_totp_step(
        self, user_id: UserId, factor_id: uuid.UUID, *, step: int, now: datetime, event: AuditEvent
    ) -> bool:
        """Use up `step` of the confirmed TOTP if it is later than the last step it
        accepted (atomically: of two calls with one code, one wins); last used `now`.
        False, nothing written, otherwise."""
        ...

    async def use_recovery_code(
        self, user_id: UserId, code_hash: bytes, *, now: datetime, event: AuditEvent
    ) -> bool:
        """Spend the user's unused recovery code with this hash (once: of two calls, one
        wins). False, nothing written, if there is no such unused code."""
        ...

    async def factor_kinds(self, user_id: UserId) -> frozenset[FactorKind]:
        """The kinds of the user's confirmed factors, and RECOVERY_CODE while an unused
        code is left."""
        ...

    async def list_factors(self, user_id: UserId, *, event: AuditEvent | None) -> FactorList | None:
        """The user's confirmed factors, oldest first, and unused codes; None, nothing
        recorded, if there is no such user."""
        ...

    async def remove_factor(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        now: datetime,
        ender: SessionEnder,
        keep: SessionId | None,
        event: AuditEvent,
    ) -> FactorChange | None:
        """Delete the confirmed factor; with the user's last, the recovery codes too. End
        the user's sessions but `keep` (SECOND_FACTOR_CHANGED, by `ender`), recording
        `event` with the factor's kind. None, nothing written, if there is no such
        factor."""
        ...

    async def replace_recovery_codes(
        self,
        user_id: UserId,
        code_hashes: list[bytes],
        *,
        now: datetime,
        keep: SessionId | None,
        event: AuditEvent,
    ) -> FactorChange | None:
        """Replace the user's recovery codes by these hashes and end the user's sessions
        but `keep` (SECOND_FACTOR_CHANGED, by the user from `keep`), recording `event`.
        None, nothing written, if the user has no confirmed factor to recover."""
        ...

    async def set_second_factor_required(
        self, user_id: UserId, required: bool, *, now: datetime, event: AuditEvent
    ) -> Account | None:
        """Mark or unmark the account; the account after it, or None if there is none."""
        ...

    async def record(self, event: AuditEvent) -> None:
        """Append `event` to the audit trail."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TotpEnrolment:
    """A TOTP enrolment awaiting confirmation: its secret, shown to the user once."""

    factor_id: uuid.UUID
    secret: str
    provisioning_uri: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmedTotp:
    factor: Factor
    # The first factor's new recovery codes, shown once; empty otherwise.
    recovery_codes: list[str]
    # The code that confirmed it: the session it was made in, or the pending login, is
    # then at AAL2.
    verified: VerifiedFactor
    revoked_session_count: int


class FactorService:
    """The use cases of second factors; `SecondFactors` for sessions (domain/factor_ports).

    `passkeys` verifies passkey assertions (None: a passkey proof is SecondFactorInvalid).
    `required_of_everyone`: the server's policy requires a factor of every account.
    """

    def __init__(
        self,
        *,
        store: FactorStore,
        wrapper: KeyWrapper,
        throttle: LoginThrottle,
        clock: Clock,
        endings: SessionEndings,
        passkeys: PasskeyVerifier | None,
        issuer: str,
        required_of_everyone: bool = False,
    ) -> None:
        self._store = store
        self._wrapper = wrapper
        self._throttle = throttle
        self._clock = clock
        self._endings = endings
        self._passkeys = passkeys
        self._issuer = issuer
        self._required_of_everyone = required_of_everyone

    # --- SecondFactors ----------------------------------------------------------

    async def factor_kinds(self, user_id: UserId) -> frozenset[FactorKind]:
        return await self._store.factor_kinds(user_id)

    async def verify(
        self,
        user_id: UserId,
        email: str,
        proof: FactorProof,
        *,
        origin: RequestOrigin,
        binding: uuid.UUID,
    ) -> VerifiedFactor:
        kind = proof.kind
        async with self._throttle.attempt(
            email, origin.ip_address, self._refused(user_id, kind, origin)
        ) as attempt:
            verified = await self._check(user_id, proof, origin, binding)
            if verified is None:
                await self._failed(attempt, user_id, kind, origin)
            await attempt.succeeded()
        return verified

    async def _check(
        self, user_id: UserId, proof: FactorProof, origin: RequestOrigin, binding: uuid.UUID
    ) -> VerifiedFactor | None:
        now = self._clock.now()
        if proof.totp_code is not None:
            stored = await self._store.find_totp(user_id, None)
            if stored is None:
                return None
            step = totp.matching_step(await self._open(stored), proof.totp_code, at=now)
            event = self._verified_event(user_id, FactorKind.TOTP, stored.id, origin, now)
            if step is None or not await self._store.accept_totp_step(
                user_id, stored.id, step=step, now=now, event=event
            ):
                return None
            return VerifiedFactor(kind=FactorKind.TOTP, factor_id=stored.id, verified_at=now)
        if proof.recovery_code is not None:
            normalised = recovery_codes.normalise(proof.recovery_code)
            event = self._verified_event(user_id, FactorKind.RECOVERY_CODE, None, origin, now)
            if normalised is None or not await self._store.use_recovery_code(
                user_id, recovery_codes.code_hash(normalised), now=now, event=event
            ):
                return None
            return VerifiedFactor(kind=FactorKind.RECOVERY_CODE, factor_id=None, verified_at=now)
        if proof.passkey is None or self._passkeys is None:
            return None
        try:
            verified = await self._passkeys.verify_assertion(
                user_id, proof.passkey, binding=binding
            )
        except SecondFactorInvalid:
            return None
        await self._store.record(
            self._verified_event(user_id, FactorKind.PASSKEY, verified.factor_id, origin, now)
        )
        return verified

    # --- TOTP enrolment ---------------------------------------------------------

    async def enrol_totp(self, user_id: UserId, email: str, *, name: str) -> TotpEnrolment:
        """A new TOTP secret for the user, awaiting ConfirmTotp for ENROLMENT_LIFETIME
        (an earlier unconfirmed one is dropped). FactorAlreadyEnrolled if the user has a
        confirmed TOTP: one per user."""
        factor_id = uuid.uuid4()
        secret = totp.new_secret()
        now = self._clock.now()
        expires_at = now + ENROLMENT_LIFETIME
        sealed = await seal_secret(
            self._wrapper, secret.encode(), binding=_totp_binding(user_id, factor_id)
        )
        added = await self._store.add_totp_enrolment(
            user_id, factor_id, name=name, sealed_secret=sealed, now=now, expires_at=expires_at
        )
        if not added:
            raise FactorAlreadyEnrolled("the user has a TOTP factor already")
        return TotpEnrolment(
            factor_id=factor_id,
            secret=secret,
            provisioning_uri=totp.provisioning_uri(secret, account=email, issuer=self._issuer),
            expires_at=expires_at,
        )

    async def confirm_totp(
        self,
        user_id: UserId,
        email: str,
        factor_id: uuid.UUID,
        code: str,
        *,
        origin: RequestOrigin,
        session_id: SessionId | None,
    ) -> ConfirmedTotp:
        """Confirm an enrolment with a first valid code (throttled as `verify`): the
        factor counts from now, the code is used up, and the user's sessions but
        `session_id` end. The user's first factor comes with a new set of recovery
        codes. FactorNotFound for no such unexpired enrolment; SecondFactorInvalid,
        RateLimited as `verify`."""
        stored = await self._store.find_totp(user_id, factor_id)
        now = self._clock.now()
        if (
            stored is None
            or stored.confirmed_at is not None
            or stored.enrolment_expires_at is None
            or stored.enrolment_expires_at <= now
        ):
            raise FactorNotFound("no such TOTP enrolment awaiting confirmation")
        codes = recovery_codes.new_codes()
        async with self._throttle.attempt(
            email, origin.ip_address, self._refused(user_id, FactorKind.TOTP, origin)
        ) as attempt:
            step = totp.matching_step(await self._open(stored), code, at=now)
            if step is None:
                await self._failed(attempt, user_id, FactorKind.TOTP, origin)
            change = await self._store.confirm_totp(
                user_id,
                factor_id,
                step=step,
                now=now,
                first_codes=_hashes(codes),
                keep=session_id,
                event=self._change_event(
                    FactorEvent.ENROLLED,
                    user_id,
                    session_id,
                    origin,
                    now,
                    factor_type=FactorKind.TOTP.value,
                    factor_id=str(factor_id),
                ),
            )
            if change is None or change.factor is None:
                raise FactorNotFound("no such TOTP enrolment awaiting confirmation")
            await attempt.succeeded()
        self._endings.user_sessions_ended(
            user_id, change.ended, SessionEndReason.SECOND_FACTOR_CHANGED, now
        )
        _log.info(
            "factor enrolled",
            extra={"event": FactorEvent.ENROLLED, "user_id": str(user_id), "kind": "totp"},
        )
        return ConfirmedTotp(
            factor=change.factor,
            recovery_codes=codes if change.issued_codes else [],
            verified=VerifiedFactor(kind=FactorKind.TOTP, factor_id=factor_id, verified_at=now),
            revoked_session_count=len(change.ended),
        )

    # --- the user's own factors -------------------------------------------------

    async def list_factors(self, user_id: UserId) -> FactorList:
        """The user's confirmed factors and unused codes; second_factor_required says
        whether the policy or an operator requires one. UserNotFound if the account is
        gone."""
        listed = await self._store.list_factors(user_id, event=None)
        if listed is None:
            raise UserNotFound("no such user")
        return self._with_policy(listed)

    async def account_email(self, user_id: UserId) -> str:
        """The email of a session's account (a TOTP app's account name); SessionRevoked
        if the account is gone, as its sessions are."""
        email = await self._store.user_email(user_id)
        if email is None:
            raise SessionRevoked("session has been revoked")
        return email

    async def remove_factor(
        self,
        user_id: UserId,
        factor_id: uuid.UUID,
        *,
        origin: RequestOrigin,
        session_id: SessionId,
    ) -> int:
        """Remove one of the user's factors (with the last, the recovery codes) and end
        the user's other sessions. How many it ended; FactorNotFound if none such."""
        now = self._clock.now()
        change = await self._store.remove_factor(
            user_id,
            factor_id,
            now=now,
            ender=SessionEnder.user(session_id),
            keep=session_id,
            event=self._change_event(
                FactorEvent.REMOVED, user_id, session_id, origin, now, factor_id=str(factor_id)
            ),
        )
        return self._changed(user_id, change, now, FactorEvent.REMOVED)

    async def regenerate_recovery_codes(
        self, user_id: UserId, *, origin: RequestOrigin, session_id: SessionId
    ) -> tuple[list[str], int]:
        """A new set of recovery codes in place of the old (which stop working), and the
        user's other sessions ended: (the codes, shown once; how many sessions ended).
        FactorNotFound if the user has no factor whose codes these would be."""
        now = self._clock.now()
        codes = recovery_codes.new_codes()
        change = await self._store.replace_recovery_codes(
            user_id,
            _hashes(codes),
            now=now,
            keep=session_id,
            event=self._change_event(
                FactorEvent.RECOVERY_CODES_REGENERATED, user_id, session_id, origin, now
            ),
        )
        return codes, self._changed(user_id, change, now, FactorEvent.RECOVERY_CODES_REGENERATED)

    # --- operators --------------------------------------------------------------

    async def list_user_factors(self, operator: Operator, user_id: UserId) -> FactorList:
        """As `list_factors`, for an operator; audited."""
        now = self._clock.now()
        listed = await self._store.list_factors(
            user_id,
            event=admin_event(AdminEvent.USER_FACTORS_LISTED, operator, now, user_id=user_id),
        )
        if listed is None:
            raise UserNotFound("no such user")
        return self._with_policy(listed)

    async def remove_user_factor(
        self, operator: Operator, user_id: UserId, factor_id: uuid.UUID, *, reason: str
    ) -> int:
        """Remove a user's factor (a lost phone) and end every session of the user, the
        operator as their ender. How many it ended; FactorNotFound if none such."""
        reason = _optional_reason(reason)
        now = self._clock.now()
        change = await self._store.remove_factor(
            user_id,
            factor_id,
            now=now,
            ender=SessionEnder.by_operator(operator.name),
            keep=None,
            event=admin_event(
                AdminEvent.USER_FACTOR_REMOVED,
                operator,
                now,
                user_id=user_id,
                factor_id=str(factor_id),
                reason=reason,
            ),
        )
        return self._changed(user_id, change, now, AdminEvent.USER_FACTOR_REMOVED.value)

    async def set_second_factor_required(
        self, operator: Operator, user_id: UserId, required: bool
    ) -> Account:
        """Mark or unmark the account as one that must have a second factor; its live
        sessions stay. UserNotFound if there is none."""
        now = self._clock.now()
        account = await self._store.set_second_factor_required(
            user_id,
            required,
            now=now,
            event=admin_event(
                AdminEvent.SECOND_FACTOR_REQUIRED_SET,
                operator,
                now,
                user_id=user_id,
                required=required,
            ),
        )
        if account is None:
            raise UserNotFound("no such user")
        return account

    # --- helpers ----------------------------------------------------------------

    def _with_policy(self, listed: FactorList) -> FactorList:
        if not self._required_of_everyone:
            return listed
        return FactorList(
            factors=listed.factors,
            recovery_codes_remaining=listed.recovery_codes_remaining,
            second_factor_required=True,
        )

    def _changed(
        self, user_id: UserId, change: FactorChange | None, now: datetime, event: str
    ) -> int:
        if change is None:
            raise FactorNotFound("no such factor")
        self._endings.user_sessions_ended(
            user_id, change.ended, SessionEndReason.SECOND_FACTOR_CHANGED, now
        )
        _log.info("factors changed", extra={"event": event, "user_id": str(user_id)})
        return len(change.ended)

    async def _open(self, stored: StoredTotp) -> str:
        secret = await open_secret(
            self._wrapper, stored.sealed_secret, binding=_totp_binding(stored.user_id, stored.id)
        )
        return secret.decode()

    async def _failed(
        self, attempt: LoginAttempt, user_id: UserId, kind: FactorKind, origin: RequestOrigin
    ) -> NoReturn:
        _log.info(
            "second factor failed",
            extra={"event": FactorEvent.FAILED, "user_id": str(user_id), "kind": kind.value},
        )
        await attempt.failed(
            AuditEvent(
                event=FactorEvent.FAILED,
                occurred_at=self._clock.now(),
                user_id=user_id,
                origin=origin,
                detail={"reason": "invalid", "factor_type": kind.value},
            )
        )
        raise SecondFactorInvalid("the second factor is not valid")

    def _refused(self, user_id: UserId, kind: FactorKind, origin: RequestOrigin) -> AuditEvent:
        return AuditEvent(
            event=FactorEvent.FAILED,
            occurred_at=self._clock.now(),
            user_id=user_id,
            origin=origin,
            detail={"reason": "rate_limited", "factor_type": kind.value},
        )

    @staticmethod
    def _verified_event(
        user_id: UserId,
        kind: FactorKind,
        factor_id: uuid.UUID | None,
        origin: RequestOrigin,
        now: datetime,
    ) -> AuditEvent:
        detail: dict[str, object] = {"factor_type": kind.value}
        if factor_id is not None:
            detail["factor_id"] = str(factor_id)
        return AuditEvent(
            event=FactorEvent.VERIFIED,
            occurred_at=now,
            user_id=user_id,
            origin=origin,
            detail=detail,
        )

    @staticmethod
    def _change_event(
        event: str,
        user_id: UserId,
        session_id: SessionId | None,
        origin: RequestOrigin,
        now: datetime,
        **detail: object,
    ) -> AuditEvent:
        return AuditEvent(
            event=event,
            occurred_at=now,
            user_id=user_id,
            session_id=session_id,
            origin=origin,
            detail=detail,
        )


def _totp_binding(user_id: UserId, factor_id: uuid.UUID) -> bytes:
    """What a TOTP secret is sealed to: its row, so a secret copied elsewhere won't open."""
    return b"totp/" + user_id.bytes + factor_id.bytes


def _hashes(codes: list[str]) -> list[bytes]:
    hashes = []
    for code in codes:
        normalised = recovery_codes.normalise(code)
        assert normalised is not None  # new_codes makes only well-formed codes
        hashes.append(recovery_codes.code_hash(normalised))
    return hashes


def _optional_reason(value: str) -> str:
    """An operator's optional note for the audit trail (RemoveUserFactor's)."""
    return admin_reason(value) if value.strip() else ""
