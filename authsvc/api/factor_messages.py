"""Second factors as protobuf messages: for AuthService's and AdminService's factor RPCs."""

from __future__ import annotations

import uuid

from authsvc.api import convert
from authsvc.core.factors import FactorKind
from authsvc.core.user_factors import Factor, FactorList
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as auth_pb
from authsvc.v1 import second_factors_pb2 as pb

__all__ = ["factor_message", "factor_type", "parse_factor_id", "set_factor_list"]


def factor_type(kind: FactorKind) -> pb.FactorType.ValueType:
    return convert.FACTOR_TYPES[kind]


def factor_message(factor: Factor) -> pb.Factor:
    message = pb.Factor(factor_id=str(factor.id), type=factor_type(factor.kind), name=factor.name)
    convert.set_timestamp(message.created_at, factor.created_at)
    if factor.last_used_at is not None:
        convert.set_timestamp(message.last_used_at, factor.last_used_at)
    return message


def set_factor_list(
    response: auth_pb.ListFactorsResponse | admin_pb.ListUserFactorsResponse, listed: FactorList
) -> None:
    """ListFactors' and ListUserFactors' answer, filled in place."""
    response.recovery_codes_remaining = listed.recovery_codes_remaining
    response.second_factor_required = listed.second_factor_required
    response.factors.extend(factor_message(factor) for factor in listed.factors)


def parse_factor_id(value: str, field: str = "factor_id") -> uuid.UUID:
    """A factor id: the canonical UUID form only, as user and session ids."""
    factor_id: uuid.UUID = convert.parse_user_id(value, field)
    return factor_id
