"""Second factors and assurance levels: the vocabulary the domain, store and api share.

A session's assurance level and methods follow NIST SP 800-63B (AAL1, AAL2) and RFC 8176's
`amr` values, as Ory Kratos and Supabase Auth record them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "PASSWORD_METHOD",
    "Assurance",
    "AssuranceLevel",
    "AuthMethod",
    "FactorKind",
    "FactorProof",
    "PasskeyAssertion",
    "SecondFactorPolicy",
    "SecondFactorStep",
    "StoredPendingLogin",
    "VerifiedFactor",
]


class AssuranceLevel(enum.IntEnum):
    """How strongly the session's user proved who they are; the access token's `acr`."""

    AAL1 = 1
    AAL2 = 2

    @property
    def acr(self) -> str:
        return f"aal{self.value}"


class SecondFactorPolicy(enum.Enum):
    """Who must have a second factor (AUTHSVC_SECOND_FACTOR_POLICY)."""

    # The accounts an operator marks.
    MARKED = "marked"
    # Every account.
    ALL = "all"


class FactorKind(enum.Enum):
    """A kind of second factor, as stored (`user_factors.kind`, sessions' methods)."""

    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"
    PASSKEY = "passkey"

    @property
    def amr(self) -> str:
        """Its RFC 8176 method: a recovery code is a one-time password too."""
        return _AMR[self]

    @property
    def type_name(self) -> str:
        """Its FactorType value's name in the protos, as error metadata names it."""
        return f"FACTOR_TYPE_{self.name}"


_AMR = {FactorKind.TOTP: "otp", FactorKind.RECOVERY_CODE: "otp", FactorKind.PASSKEY: "hwk"}

# How sessions store a password among their methods.
PASSWORD_METHOD = "password"  # noqa: S105 (a method name, not a secret)
# The RFC 8176 method of a password.
PASSWORD_AMR = "pwd"  # noqa: S105 (a method name, not a secret)
# RFC 8176: "multiple-factor authentication"; added to `amr` at AAL2.
MULTI_FACTOR_AMR = "mfa"


@dataclass(frozen=True, slots=True)
class AuthMethod:
    """One way the user proved who they are in a session, and when last (a session keeps
    one per method: a password, or a kind of factor)."""

    # PASSWORD_METHOD or a FactorKind's value.
    method: str
    verified_at: datetime

    @property
    def amr(self) -> str:
        return PASSWORD_AMR if self.method == PASSWORD_METHOD else FactorKind(self.method).amr


@dataclass(frozen=True, slots=True)
class PasskeyAssertion:
    challenge_id: uuid.UUID
    credential_json: str


@dataclass(frozen=True, slots=True)
class FactorProof:
    """One verification of a second factor: exactly one of the three is set."""

    totp_code: str | None = None
    recovery_code: str | None = None
    passkey: PasskeyAssertion | None = None

    @property
    def kind(self) -> FactorKind:
        if self.totp_code is not None:
            return FactorKind.TOTP
        if self.recovery_code is not None:
            return FactorKind.RECOVERY_CODE
        return FactorKind.PASSKEY


@dataclass(frozen=True, slots=True)
class VerifiedFactor:
    """A factor that just proved its holder: what the session records."""

    kind: FactorKind
    # The TOTP factor or passkey; None for a recovery code.
    factor_id: uuid.UUID | None
    verified_at: datetime

    def method(self) -> AuthMethod:
        return AuthMethod(method=self.kind.value, verified_at=self.verified_at)


@dataclass(frozen=True, slots=True)
class Assurance:
    """A session's level and the methods its user proved it with, each with when last."""

    level: AssuranceLevel
    methods: tuple[AuthMethod, ...]

    @classmethod
    def password_at(cls, at: datetime) -> Assurance:
        return cls(AssuranceLevel.AAL1, (AuthMethod(method=PASSWORD_METHOD, verified_at=at),))

    @classmethod
    def stored(
        cls, aal: int, methods: Sequence[str], times: Sequence[datetime], created_at: datetime
    ) -> Assurance:
        """As sessions store it; a session from before levels were kept was a password."""
        if not methods:
            return cls.password_at(created_at)
        return cls(
            AssuranceLevel(aal),
            tuple(AuthMethod(method=m, verified_at=t) for m, t in zip(methods, times, strict=True)),
        )

    def with_factor(self, verified: VerifiedFactor) -> Assurance:
        """AAL2, with the factor's method verified now (one entry per method)."""
        kept = tuple(m for m in self.methods if m.method != verified.kind.value)
        return Assurance(AssuranceLevel.AAL2, (*kept, verified.method()))

    @property
    def amr(self) -> list[str]:
        """RFC 8176 values, each once, "mfa" last at AAL2."""
        values = list(dict.fromkeys(method.amr for method in self.methods))
        if self.level is AssuranceLevel.AAL2:
            values.append(MULTI_FACTOR_AMR)
        return values

    @property
    def authenticated_at(self) -> datetime:
        """When the user last proved who they are in the session (OIDC `auth_time`)."""
        return max(method.verified_at for method in self.methods)

    @property
    def second_factor_at(self) -> datetime | None:
        """When a second factor was last verified in the session; None if never."""
        times = [m.verified_at for m in self.methods if m.method != PASSWORD_METHOD]
        return max(times) if times else None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredPendingLogin:
    id: uuid.UUID
    user_id: uuid.UUID
    email: str
    # The password hash that was verified (the store keeps only its digest) or, read back,
    # the account's current one.
    password_hash: str
    created_at: datetime
    expires_at: datetime
    enrolment_required: bool
    remember_me: bool
    device_name: str
    ip_address: str
    user_agent: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SecondFactorStep:
    """Login's answer when the password was right and one more step is needed."""

    # Secret: returned once, stored hashed.
    pending_login_token: str
    expires_at: datetime
    # What the login can complete with; empty when enrolment_required.
    factor_kinds: frozenset[FactorKind]
    enrolment_required: bool
