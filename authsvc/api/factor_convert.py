"""Second factors and assurance levels between protobuf and the domain."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Final

from authsvc.api.convert import FACTOR_TYPES, LEVELS, set_timestamp
from authsvc.core.errors import InvalidArgument
from authsvc.core.factors import (
    AssuranceLevel,
    FactorKind,
    FactorProof,
    PasskeyAssertion,
    SecondFactorStep,
)
from authsvc.v1 import second_factors_pb2 as factors_pb

__all__ = [
    "MAX_CODE_LENGTH",
    "MAX_CREDENTIAL_JSON",
    "factor_proof",
    "level_of_acr",
    "passkey_assertion",
    "pending_login_token",
    "set_second_factor_step",
]

_ACR_LEVELS: Final = {level.acr: LEVELS[level] for level in AssuranceLevel}
# Longer than any code a person types (a recovery code with its dashes is 19).
MAX_CODE_LENGTH: Final = 64
# A WebAuthn credential's JSON, attestation included, is a few KiB.
MAX_CREDENTIAL_JSON: Final = 64 * 1024


def level_of_acr(acr: object) -> factors_pb.AssuranceLevel.ValueType:
    """An access token's `acr` as a level; a token minted before levels were kept has
    none, and was a password: AAL1."""
    if acr is None:
        return factors_pb.ASSURANCE_LEVEL_AAL1
    return _ACR_LEVELS.get(str(acr), factors_pb.ASSURANCE_LEVEL_UNSPECIFIED)


def set_second_factor_step(message: factors_pb.SecondFactorStep, step: SecondFactorStep) -> None:
    message.pending_login_token = step.pending_login_token
    set_timestamp(message.expires_at, step.expires_at)
    message.factor_types.extend(_types(step.factor_kinds))
    message.enrolment_required = step.enrolment_required


def _types(kinds: Iterable[FactorKind]) -> list[factors_pb.FactorType.ValueType]:
    return sorted(FACTOR_TYPES[kind] for kind in kinds)


def factor_proof(message: factors_pb.FactorProof, *, field: str = "proof") -> FactorProof:
    """Exactly one proof, each bounded; INVALID_FIELD otherwise."""
    which = message.WhichOneof("proof")
    if which == "totp_code":
        return FactorProof(totp_code=_code(message.totp_code, f"{field}.totp_code"))
    if which == "recovery_code":
        return FactorProof(recovery_code=_code(message.recovery_code, f"{field}.recovery_code"))
    if which == "passkey":
        return FactorProof(passkey=passkey_assertion(message.passkey, field=f"{field}.passkey"))
    raise InvalidArgument(field, f"{field} needs one of totp_code, recovery_code, passkey")


def passkey_assertion(
    message: factors_pb.PasskeyAssertion, *, field: str = "assertion"
) -> PasskeyAssertion:
    try:
        challenge_id = uuid.UUID(message.challenge_id)
    except ValueError:
        raise InvalidArgument(
            f"{field}.challenge_id", f"{field}.challenge_id is not a UUID"
        ) from None
    if not message.credential_json or len(message.credential_json) > MAX_CREDENTIAL_JSON:
        raise InvalidArgument(
            f"{field}.credential_json", f"{field}.credential_json is empty or too long"
        )
    return PasskeyAssertion(challenge_id=challenge_id, credential_json=message.credential_json)


def pending_login_token(value: str, *, required: bool) -> str:
    """A pending login token as sent: bounded; empty only where it is optional."""
    if required and not value:
        raise InvalidArgument("pending_login_token", "pending_login_token is required")
    if len(value) > MAX_CODE_LENGTH * 2:
        raise InvalidArgument("pending_login_token", "pending_login_token is too long")
    return value


def _code(value: str, field: str) -> str:
    if not value or len(value) > MAX_CODE_LENGTH:
        raise InvalidArgument(field, f"{field} is empty or too long")
    return value
