"""Passkeys (WebAuthn credentials, verified with py_webauthn): registration, assertions for
CompleteLogin and StepUp, and PasskeyLogin (docs/second-factors.md, "Passkeys").

Every ceremony starts with a challenge stored single use for five minutes, bound to what it
was issued for: the user, and the pending login or session (none for PasskeyLogin). The
store keeps only the challenge's SHA-256; the browser's answer carries the challenge in its
client data, and the one statement that deletes the row (id, purpose, binding, user, hash,
unexpired) decides, so two answers racing for one challenge cannot both succeed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn, Protocol, TypeVar

import webauthn
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from authsvc.core.clock import Clock
from authsvc.core.errors import (
    InvalidArgument,
    PasskeyChallengeInvalid,
    PasskeysDisabled,
    SecondFactorInvalid,
)
from authsvc.core.factors import FactorKind, PasskeyAssertion, VerifiedFactor
from authsvc.core.models import (
    AuditEvent,
    DeviceInfo,
    EndedSession,
    IssuedTokens,
    RequestOrigin,
    SessionEndReason,
    SessionId,
    UserId,
)
from authsvc.core.passkeys import Challenge, ChallengePurpose, NewPasskey, StoredPasskey
from authsvc.core.user_factors import Factor
from authsvc.domain import recovery_codes
from authsvc.domain.factor_ports import SessionAssurance
from authsvc.domain.factors import FactorEvent
from authsvc.domain.session_endings import SessionEndings
from authsvc.domain.throttle import LoginAttempt, LoginThrottle

__all__ = [
    "CHALLENGE_LIFETIME",
    "MAX_CREDENTIAL_JSON",
    "PasskeyOptions",
    "PasskeyService",
    "PasskeyStore",
    "RegisteredPasskey",
    "RelyingParty",
]

_log = logging.getLogger(__name__)

# Long enough for a person to find their authenticator and touch it; the browser's own
# timeout (the options' `timeout`) is the same.
CHALLENGE_LIFETIME = timedelta(minutes=5)
# A credential's JSON is a few hundred bytes, an attestation with a certificate chain a few
# KiB; anything far larger is not one. (Below the server's default message limit, 64 KiB.)
MAX_CREDENTIAL_JSON = 16 * 1024
_CHALLENGE_BYTES = 32

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class RelyingParty:
    """The site passkeys belong to (AUTHSVC_WEBAUTHN_*)."""

    id: str
    name: str
    origins: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PasskeyOptions:
    """What a Begin RPC answers: options for the browser, and the challenge to quote."""

    challenge_id: uuid.UUID
    options_json: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredPasskey:
    factor: Factor
    # Shown once: a new set when this was the user's first factor, else empty.
    recovery_codes: list[str]
    # The registration counts as a verification of the new passkey.
    verified: VerifiedFactor


class PasskeyStore(Protocol):
    """Challenges and passkeys in PostgreSQL (store/passkeys.py). Every method raises
    DatabaseUnavailable when the database cannot be reached in time."""

    async def user_email(self, user_id: UserId) -> str | None:
        """The account's email; None if there is no such account."""
        ...

    async def passkeys(self, user_id: UserId) -> list[StoredPasskey]:
        """The user's passkeys, oldest first."""
        ...

    async def save_challenge(self, challenge: Challenge) -> None: ...

    async def take_challenge(
        self,
        challenge_id: uuid.UUID,
        *,
        purpose: str,
        user_id: UserId | None,
        binding: uuid.UUID | None,
        challenge_hash: bytes,
        now: datetime,
    ) -> Challenge | None:
        """Delete and return the challenge if every one of these matches it (None matching
        only NULL) and it expires after `now`; None, deleting nothing, otherwise. Of
        concurrent calls for one challenge, at most one gets it."""
        ...

    async def find_passkey(self, user_id: UserId, credential_id: bytes) -> StoredPasskey | None:
        """The user's passkey with this credential id; None if the user has none such."""
        ...

    async def record_use(self, passkey: StoredPasskey, *, sign_count: int, now: datetime) -> bool:
        """Set the passkey's sign count and last use, if its count is still the one read
        (`passkey.sign_count`): False, writing nothing, if a concurrent use moved it or the
        passkey is gone."""
        ...

    async def add_passkey(
        self,
        passkey: NewPasskey,
        *,
        first_codes: list[bytes],
        keep: SessionId | None,
        event: AuditEvent,
    ) -> tuple[list[EndedSession], bool] | None:
        """In one transaction holding the user's row lock: insert the passkey (confirmed
        at its creation); if the user has no other confirmed factor, replace the recovery
        codes by `first_codes` (hashes); end every live session of the user but `keep`
        (SECOND_FACTOR_CHANGED, by the user) and record `event`. The sessions ended and
        whether the codes were issued; None, writing nothing, if the account is gone.
        FactorAlreadyEnrolled if the user has this credential already."""
        ...


class PasskeyService:
    """Implements domain.factor_ports.PasskeyVerifier, and the passkey RPCs' use cases."""

    def __init__(
        self,
        *,
        store: PasskeyStore,
        assurance: SessionAssurance,
        throttle: LoginThrottle,
        endings: SessionEndings,
        clock: Clock,
        relying_party: RelyingParty | None,
    ) -> None:
        """`relying_party` None: passkeys are off, every use case raises PasskeysDisabled."""
        self._store = store
        self._assurance = assurance
        self._throttle = throttle
        self._endings = endings
        self._clock = clock
        self._rp = relying_party

    @property
    def enabled(self) -> bool:
        return self._rp is not None

    async def _take(
        self,
        challenge_id: uuid.UUID,
        purpose: str,
        user_id: UserId | None,
        binding: uuid.UUID | None,
        challenge: bytes,
        now: datetime,
    ) -> Challenge:
        """Use the challenge up, if it is what the browser signed and for what it was
        issued; PasskeyChallengeInvalid otherwise."""
        taken = await self._store.take_challenge(
            challenge_id,
            purpose=purpose,
            user_id=user_id,
            binding=binding,
            challenge_hash=_hash(challenge),
            now=now,
        )
        if taken is None:
            raise PasskeyChallengeInvalid("the passkey challenge is not valid")
        return taken

    def _relying_party(self) -> RelyingParty:
        if self._rp is None:
            raise PasskeysDisabled("passkeys are not configured on this server")
        return self._rp

    # --- registration --------------------------------------------------------

    async def begin_registration(
        self, user_id: UserId, *, binding: uuid.UUID, name: str
    ) -> PasskeyOptions:
        """Creation options for the user: a discoverable credential (so PasskeyLogin can
        find it), user verification preferred, none of the user's passkeys again.
        `binding`: the pending login or session the registration happens in."""
        rp = self._relying_party()
        email = await self._store.user_email(user_id)
        if email is None:
            raise SecondFactorInvalid("no such account")
        existing = await self._store.passkeys(user_id)
        challenge = secrets.token_bytes(_CHALLENGE_BYTES)
        options = webauthn.generate_registration_options(
            rp_id=rp.id,
            rp_name=rp.name,
            # The user handle: the id's 16 bytes, so an assertion names its user.
            user_id=user_id.bytes,
            user_name=email,
            user_display_name=email,
            challenge=challenge,
            timeout=int(CHALLENGE_LIFETIME.total_seconds() * 1000),
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
            exclude_credentials=[_descriptor(passkey) for passkey in existing],
        )
        return await self._issue(
            challenge,
            webauthn.options_to_json(options),
            user_id=user_id,
            purpose=ChallengePurpose.REGISTRATION,
            binding=binding,
            name=name,
        )

    async def finish_registration(
        self,
        user_id: UserId,
        challenge_id: uuid.UUID,
        credential_json: str,
        *,
        binding: uuid.UUID,
        keep: SessionId | None,
        origin: RequestOrigin,
    ) -> RegisteredPasskey:
        """Verify the browser's attestation against the challenge begun for this user and
        binding, and add the passkey, ending the user's other sessions (all but `keep`)
        as SECOND_FACTOR_CHANGED. Raises InvalidArgument (malformed JSON),
        PasskeyChallengeInvalid, SecondFactorInvalid (the attestation does not verify),
        FactorAlreadyEnrolled."""
        rp = self._relying_party()
        credential = _parse(parse_registration_credential_json, credential_json)
        challenge = _client_challenge(credential)
        now = self._clock.now()
        taken = await self._take(
            challenge_id, ChallengePurpose.REGISTRATION, user_id, binding, challenge, now
        )
        try:
            verified = webauthn.verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=list(rp.origins),
            )
        except WebAuthnException as exc:
            _log.info(
                "passkey registration refused",
                extra={"event": "passkey_registration_refused", "user_id": str(user_id)},
            )
            raise SecondFactorInvalid("the passkey could not be verified") from exc
        passkey = NewPasskey(
            id=uuid.uuid4(),
            user_id=user_id,
            name=taken.name,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=tuple(t.value for t in credential.response.transports or ()),
            created_at=now,
        )
        # Issued only if this is the user's first factor (the store decides, under its lock).
        codes = recovery_codes.new_codes()
        added = await self._store.add_passkey(
            passkey,
            first_codes=_code_hashes(codes),
            keep=keep,
            event=AuditEvent(
                event=FactorEvent.ENROLLED,
                occurred_at=now,
                user_id=user_id,
                session_id=keep,
                origin=origin,
                detail={
                    "factor_type": FactorKind.PASSKEY.value,
                    "factor_id": str(passkey.id),
                    "aaguid": verified.aaguid,
                },
            ),
        )
        if added is None:
            raise SecondFactorInvalid("no such account")
        ended, issued_codes = added
        self._endings.user_sessions_ended(
            user_id, ended, SessionEndReason.SECOND_FACTOR_CHANGED, now
        )
        _log.info(
            "factor enrolled",
            extra={"event": FactorEvent.ENROLLED, "user_id": str(user_id), "kind": "passkey"},
        )
        factor = Factor(
            id=passkey.id,
            user_id=user_id,
            kind=FactorKind.PASSKEY,
            name=passkey.name,
            created_at=now,
            last_used_at=None,
        )
        return RegisteredPasskey(
            factor=factor,
            recovery_codes=codes if issued_codes else [],
            verified=VerifiedFactor(kind=FactorKind.PASSKEY, factor_id=passkey.id, verified_at=now),
        )

    # --- assertions ----------------------------------------------------------

    async def begin_assertion(
        self, user_id: UserId | None, *, binding: uuid.UUID | None
    ) -> PasskeyOptions:
        """Request options: for a user (CompleteLogin's pending login or StepUp's session
        as `binding`), naming the user's passkeys; for PasskeyLogin (no user, no binding),
        naming none, so the browser offers its discoverable ones, with user verification
        required."""
        rp = self._relying_party()
        challenge = secrets.token_bytes(_CHALLENGE_BYTES)
        allowed = [] if user_id is None else await self._store.passkeys(user_id)
        options = webauthn.generate_authentication_options(
            rp_id=rp.id,
            challenge=challenge,
            timeout=int(CHALLENGE_LIFETIME.total_seconds() * 1000),
            allow_credentials=[_descriptor(passkey) for passkey in allowed],
            user_verification=(
                UserVerificationRequirement.REQUIRED
                if user_id is None
                else UserVerificationRequirement.PREFERRED
            ),
        )
        return await self._issue(
            challenge,
            webauthn.options_to_json(options),
            user_id=user_id,
            purpose=ChallengePurpose.ASSERTION,
            binding=binding,
            name="",
        )

    async def verify_assertion(
        self, user_id: UserId, assertion: PasskeyAssertion, *, binding: uuid.UUID | None
    ) -> VerifiedFactor:
        """PasskeyVerifier.verify_assertion: an assertion by one of `user_id`'s passkeys for
        a challenge issued to that user for `binding`."""
        credential = self._parse_assertion(assertion)
        handle = _user_handle(credential)
        if handle is not None and handle != user_id:
            # Consume nothing: the challenge stays for the user's own passkey.
            raise SecondFactorInvalid("the passkey is not this user's")
        return await self._verify(user_id, user_id, assertion.challenge_id, credential, binding)

    async def passkey_login(
        self,
        assertion: PasskeyAssertion,
        *,
        remember_me: bool,
        device: DeviceInfo,
        origin: RequestOrigin,
    ) -> IssuedTokens:
        """A session at AAL2 for a discoverable passkey with user verification, answering a
        challenge begun without a user. Throttled as Login: a failed assertion counts as a
        failed login for the account (found by the passkey's user handle) and the address;
        one naming no account counts against the address alone. Raises
        PasskeyChallengeInvalid, SecondFactorInvalid, RateLimited."""
        credential = self._parse_assertion(assertion)
        handle = _user_handle(credential)
        email = None if handle is None else await self._store.user_email(handle)
        refused = AuditEvent(
            event="passkey_login_failed",
            occurred_at=self._clock.now(),
            user_id=handle if email is not None else None,
            origin=origin,
            detail={"reason": "rate_limited"},
        )
        if handle is None or email is None:
            async with self._throttle.address_attempt(origin.ip_address, refused) as attempt:
                await self._login_failed(attempt, None, origin, "unknown_passkey")
        async with self._throttle.attempt(email, origin.ip_address, refused) as attempt:
            try:
                verified = await self._verify(
                    handle, None, assertion.challenge_id, credential, None
                )
            except (SecondFactorInvalid, PasskeyChallengeInvalid) as exc:
                await self._login_failed(attempt, handle, origin, "invalid_assertion", exc)
            await attempt.succeeded()
        return await self._assurance.passkey_login(
            handle, verified, remember_me=remember_me, device=device
        )

    async def _login_failed(
        self,
        attempt: LoginAttempt,
        user_id: UserId | None,
        origin: RequestOrigin,
        reason: str,
        error: Exception | None = None,
    ) -> NoReturn:
        _log.info(
            "passkey login failed",
            extra={
                "event": "passkey_login_failed",
                "user_id": None if user_id is None else str(user_id),
                "reason": reason,
            },
        )
        await attempt.failed(
            AuditEvent(
                event="passkey_login_failed",
                occurred_at=self._clock.now(),
                user_id=user_id,
                origin=origin,
                detail={"reason": reason},
            )
        )
        if isinstance(error, PasskeyChallengeInvalid):
            raise error
        raise SecondFactorInvalid("the passkey is not valid") from error

    def _parse_assertion(self, assertion: PasskeyAssertion) -> AuthenticationCredential:
        self._relying_party()
        return _parse(parse_authentication_credential_json, assertion.credential_json)

    async def _verify(
        self,
        user_id: UserId,
        bound_user: UserId | None,
        challenge_id: uuid.UUID,
        credential: AuthenticationCredential,
        binding: uuid.UUID | None,
    ) -> VerifiedFactor:
        """Consume the challenge (issued to `bound_user` for `binding`), then check the
        assertion against `user_id`'s passkey with its credential id."""
        rp = self._relying_party()
        challenge = _client_challenge(credential)
        now = self._clock.now()
        await self._take(
            challenge_id, ChallengePurpose.ASSERTION, bound_user, binding, challenge, now
        )
        passkey = await self._store.find_passkey(user_id, credential.raw_id)
        if passkey is None:
            raise SecondFactorInvalid("the passkey is not known")
        try:
            result = webauthn.verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=rp.id,
                expected_origin=list(rp.origins),
                credential_public_key=passkey.public_key,
                # py_webauthn refuses a nonzero count not above this: a cloned authenticator.
                credential_current_sign_count=passkey.sign_count,
                # A passkey alone (PasskeyLogin) must be two factors in itself.
                require_user_verification=bound_user is None,
            )
        except WebAuthnException as exc:
            _log.info(
                "passkey assertion refused",
                extra={
                    "event": "passkey_assertion_refused",
                    "user_id": str(user_id),
                    "factor_id": str(passkey.id),
                },
            )
            raise SecondFactorInvalid("the passkey assertion could not be verified") from exc
        if not await self._store.record_use(passkey, sign_count=result.new_sign_count, now=now):
            raise SecondFactorInvalid("the passkey was used concurrently")
        return VerifiedFactor(kind=FactorKind.PASSKEY, factor_id=passkey.id, verified_at=now)

    async def _issue(
        self,
        challenge: bytes,
        options_json: str,
        *,
        user_id: UserId | None,
        purpose: str,
        binding: uuid.UUID | None,
        name: str,
    ) -> PasskeyOptions:
        now = self._clock.now()
        stored = Challenge(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            binding=binding,
            challenge_hash=_hash(challenge),
            created_at=now,
            expires_at=now + CHALLENGE_LIFETIME,
            name=name,
        )
        await self._store.save_challenge(stored)
        return PasskeyOptions(
            challenge_id=stored.id, options_json=options_json, expires_at=stored.expires_at
        )


def _code_hashes(codes: list[str]) -> list[bytes]:
    """What the store keeps of new recovery codes (as domain/factors.py stores them)."""
    hashes = []
    for code in codes:
        normalised = recovery_codes.normalise(code)
        assert normalised is not None  # new_codes makes only well-formed codes
        hashes.append(recovery_codes.code_hash(normalised))
    return hashes


def _hash(challenge: bytes) -> bytes:
    return hashlib.sha256(challenge).digest()


def _descriptor(passkey: StoredPasskey) -> PublicKeyCredentialDescriptor:
    known = {t.value for t in AuthenticatorTransport}
    transports = [AuthenticatorTransport(t) for t in passkey.transports if t in known]
    return PublicKeyCredentialDescriptor(id=passkey.credential_id, transports=transports or None)


def _parse(parse: _Parser[T], credential_json: str) -> T:
    if len(credential_json) > MAX_CREDENTIAL_JSON:
        raise InvalidArgument("credential_json", "credential_json is too large")
    try:
        return parse(credential_json)
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise InvalidArgument("credential_json", "credential_json is not a credential") from exc


class _Parser(Protocol[T_co]):
    def __call__(self, json_value: str, /) -> T_co: ...


def _client_challenge(credential: RegistrationCredential | AuthenticationCredential) -> bytes:
    """The challenge the browser signed over, from its client data."""
    try:
        return parse_client_data_json(credential.response.client_data_json).challenge
    except (WebAuthnException, ValueError, TypeError, KeyError) as exc:
        raise InvalidArgument("credential_json", "credential_json is not a credential") from exc


def _user_handle(credential: AuthenticationCredential) -> UserId | None:
    """The account a discoverable passkey names; None if it names none we could have made."""
    handle = credential.response.user_handle
    if not handle or len(handle) != 16:
        return None
    return UserId(uuid.UUID(bytes=bytes(handle)))
