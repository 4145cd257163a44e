"""GetSessionLineage's answer: a session's refresh lineage as protobuf."""

from __future__ import annotations

from authsvc.api import convert
from authsvc.core.lineage import LineageStep, RefreshOutcome, SessionLineage
from authsvc.core.models import SessionEnd
from authsvc.v1 import admin_service_pb2 as pb

__all__ = ["lineage_response"]

# Each stored outcome is the proto value of its name.
_OUTCOMES = {
    outcome: pb.RefreshOutcome.Value(f"REFRESH_OUTCOME_{outcome.name}")
    for outcome in RefreshOutcome
}


def _set_step(message: pb.LineageStep, step: LineageStep) -> None:
    message.token_id = str(step.token_id)
    if step.successor_token_id is not None:
        message.successor_token_id = str(step.successor_token_id)
    convert.set_timestamp(message.presented_at, step.presented_at)
    message.ip_address = step.origin.ip_address
    message.user_agent = step.origin.user_agent
    message.outcome = _OUTCOMES[step.outcome]
    message.within_grace = step.within_grace


def lineage_response(
    lineage: SessionLineage, end: SessionEnd | None
) -> pb.GetSessionLineageResponse:
    """The answer, built in place field by field; the session as GetSession shows it."""
    response = pb.GetSessionLineageResponse(truncated=lineage.truncated)
    response.session.CopyFrom(convert.session_message(lineage.session, end, current=False))
    if lineage.initial_token_id is not None:
        response.initial_token_id = str(lineage.initial_token_id)
    for step in lineage.steps:
        _set_step(response.steps.add(), step)
    if lineage.reuse is not None:
        replayed = lineage.reuse.replayed_presentation
        response.reuse.token_id = str(replayed.token_id)
        if lineage.reuse.first_presentation is not None:
            _set_step(response.reuse.first_presentation, lineage.reuse.first_presentation)
        _set_step(response.reuse.replayed_presentation, replayed)
    return response
