"""Every stored end reason reaches WatchRevocations, and a refusal's ErrorInfo, as the proto
value of its name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from google.rpc import error_details_pb2, status_pb2

from authsvc.api.convert import revocation_response
from authsvc.api.errors import status_for
from authsvc.core.errors import SessionRevoked
from authsvc.core.models import Revocation, SessionEndReason, SessionId, UserId
from authsvc.v1 import auth_service_pb2 as pb


@pytest.mark.parametrize("reason", list(SessionEndReason), ids=lambda reason: reason.value)
def test_each_end_reason_is_sent_as_the_proto_value_of_its_name(
    reason: SessionEndReason,
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    revocation = Revocation(
        cursor=1,
        session_id=SessionId(uuid.uuid4()),
        user_id=UserId(uuid.uuid4()),
        reason=reason,
        revoked_at=now,
    )

    sent = revocation_response(revocation, tokens_expire_by=now).revocation.reason

    assert pb.SessionEndReason.Name(sent) == f"SESSION_END_REASON_{reason.name}"


def test_every_proto_end_reason_has_a_stored_one() -> None:
    stored = {f"SESSION_END_REASON_{reason.name}" for reason in SessionEndReason}

    assert set(pb.SessionEndReason.keys()) - stored == {"SESSION_END_REASON_UNSPECIFIED"}


@pytest.mark.parametrize("reason", list(SessionEndReason), ids=lambda reason: reason.value)
def test_each_end_reason_is_sent_in_a_refusals_error_info_by_the_proto_values_name(
    reason: SessionEndReason,
) -> None:
    ended_at = datetime(2026, 1, 1, 12, 30, 0, 250_000, tzinfo=UTC)
    status = status_for(SessionRevoked("revoked", end_reason=reason, ended_at=ended_at))

    packed = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    packed.details[0].Unpack(info)
    assert dict(info.metadata) == {
        "end_reason": f"SESSION_END_REASON_{reason.name}",
        "ended_at": "2026-01-01T12:30:00.250000Z",
    }
