"""Second factors and assurance levels: the vocabulary the domain, store and api share.

A session's assurance level and methods follow NIST SP 800-63B (AAL1, AAL2) and RFC 8176's
`amr` values, as Ory Kratos and Supabase Auth record them.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "AssuranceLevel",
    "AuthMethod",
    "FactorKind",
    "FactorProof",
    "PasskeyAssertion",
    "VerifiedFactor",
]


class AssuranceLevel(enum.IntEnum):
    """How strongly the session's user proved who they are; the access token's `acr`."""

    AAL1 = 1
    AAL2 = 2

    @property
    def acr(self) -> str:
        return f"aal{self.value}"


class FactorKind(enum.Enum):
    """A kind of second factor, as stored (`user_factors.kind`, sessions' methods)."""

    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"
    PASSKEY = "passkey"

    @property
    def amr(self) -> str:
        """Its RFC 8176 method: a recovery code is a one-time password too."""
        return _AMR[self]


_AMR = {FactorKind.TOTP: "otp", FactorKind.RECOVERY_CODE: "otp", FactorKind.PASSKEY: "hwk"}

# The RFC 8176 method of a password.
PASSWORD_AMR = "pwd"  # noqa: S105 (a method name, not a secret)
# RFC 8176: "multiple-factor authentication"; added to `amr` at AAL2.
MULTI_FACTOR_AMR = "mfa"


@dataclass(frozen=True, slots=True)
class AuthMethod:
    """One way the user proved who they are in a session, and when last (a session keeps
    one per method: a password, or a kind of factor)."""

    # "password" or a FactorKind's value.
    method: str
    verified_at: datetime

    @property
    def amr(self) -> str:
        return PASSWORD_AMR if self.method == "password" else FactorKind(self.method).amr


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
