"""Second factors and assurance levels between protobuf and the domain."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Final, TypeVar

from authsvc.api.convert import FACTOR_TYPES, LEVELS, TOKEN_TYPE, parse_user_id, set_timestamp
from authsvc.api.interceptors import note_subject
from authsvc.core.errors import InvalidArgument
from authsvc.core.factors import (
    AssuranceLevel,
    FactorKind,
    FactorProof,
    PasskeyAssertion,
    SecondFactorStep,
)
from authsvc.core.models import IssuedTokens, Principal
from authsvc.domain.factor_ports import SteppedUp
from authsvc.domain.passkeys import MAX_CREDENTIAL_JSON
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb

__all__ = [
    "MAX_CODE_LENGTH",
    "TokenAnswer",
    "challenge_id",
    "credential_json",
    "factor_proof",
    "level_of_acr",
    "passkey_assertion",
    "pending_login_token",
    "set_second_factor_step",
    "set_stepped_up",
    "with_tokens",
]

_ACR_LEVELS: Final = {level.acr: LEVELS[level] for level in AssuranceLevel}
# Longer than any code a person types (a recovery code with its dashes is 19).
MAX_CODE_LENGTH: Final = 64


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
    return PasskeyAssertion(
        challenge_id=challenge_id(message.challenge_id, f"{field}.challenge_id"),
        credential_json=credential_json(message.credential_json, f"{field}.credential_json"),
    )


def challenge_id(value: str, field: str = "challenge_id") -> uuid.UUID:
    """The canonical UUID form only, as user, session and factor ids."""
    parsed: uuid.UUID = parse_user_id(value, field)
    return parsed


def credential_json(value: str, field: str = "credential_json") -> str:
    if not value:
        raise InvalidArgument(field, f"{field} is required")
    if len(value) > MAX_CREDENTIAL_JSON:
        raise InvalidArgument(field, f"{field} is too large")
    return value


TokenAnswer = TypeVar(
    "TokenAnswer",
    pb.RegisterResponse,
    pb.LoginResponse,
    pb.RefreshResponse,
    pb.CompleteLoginResponse,
    pb.PasskeyLoginResponse,
    pb.SignedIn,
)


def with_tokens(answer: TokenAnswer, tokens: IssuedTokens) -> TokenAnswer:
    """Any answer that carries a session's token pair, filled in place."""
    note_subject(tokens.user_id, tokens.session_id)
    answer.access_token = tokens.access_token
    set_timestamp(answer.access_token_expires_at, tokens.access_token_expires_at)
    answer.refresh_token = tokens.refresh_token
    set_timestamp(answer.refresh_token_expires_at, tokens.refresh_token_expires_at)
    answer.session_id = str(tokens.session_id)
    answer.user_id = str(tokens.user_id)
    answer.token_type = TOKEN_TYPE
    return answer


def set_stepped_up(signed_in: pb.SignedIn, principal: Principal, stepped: SteppedUp) -> None:
    """The caller's session, raised by the factor it just added: a new access token."""
    signed_in.access_token = stepped.access_token
    set_timestamp(signed_in.access_token_expires_at, stepped.access_token_expires_at)
    signed_in.session_id = str(principal.session_id)
    signed_in.user_id = str(principal.user_id)
    signed_in.token_type = TOKEN_TYPE


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
