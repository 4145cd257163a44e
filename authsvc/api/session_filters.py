"""RevokeSessions' SessionFilter and sample: protobuf <-> domain."""

from __future__ import annotations

from authsvc.api import convert
from authsvc.core.session_filters import SampledSession, SessionFilter
from authsvc.v1 import admin_service_pb2 as pb

__all__ = ["add_sampled", "session_filter"]


def session_filter(message: pb.SessionFilter) -> SessionFilter:
    """The request's filter as given; the domain checks what it means (checked_filter)."""
    return SessionFilter(
        user_ids=tuple(
            convert.parse_user_id(user_id, "filter.user_ids") for user_id in message.user_ids
        ),
        created_after=convert.optional_instant(
            message.created_after,
            present=message.HasField("created_after"),
            field="filter.created_after",
        ),
        created_before=convert.optional_instant(
            message.created_before,
            present=message.HasField("created_before"),
            field="filter.created_before",
        ),
        ip_cidr=message.ip_cidr,
        user_agent_contains=message.user_agent_contains,
        device_types=tuple(
            convert.device_type_of(value, "filter.device_types") for value in message.device_types
        ),
        signing_key_id=message.signing_key_id,
        match_all=message.match_all,
    )


def add_sampled(response: pb.RevokeSessionsResponse, sampled: SampledSession) -> None:
    """Append one sampled session, with its user, to the dry run's answer."""
    convert.add_session(response.sample, sampled.session, current=None)
    response.sample[-1].user_id = str(sampled.user_id)
