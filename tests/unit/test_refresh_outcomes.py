"""Refresh lineage's outcomes: the domain's, the proto's and the table's are one list."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from authsvc.api.lineage import lineage_response
from authsvc.core.lineage import LineageStep, RefreshOutcome, SessionLineage
from authsvc.core.models import DeviceInfo, DeviceType, RequestOrigin, Session, SessionId, UserId
from authsvc.store.migrate import bundled_migrations
from authsvc.v1 import admin_service_pb2 as pb

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _lineage(outcome: RefreshOutcome) -> SessionLineage:
    session = Session(
        id=SessionId(uuid.uuid4()),
        user_id=UserId(uuid.uuid4()),
        created_at=_NOW,
        last_active_at=_NOW,
        idle_expires_at=_NOW,
        expires_at=_NOW,
        remember_me=False,
        device=DeviceInfo(
            user_agent="",
            ip_address="",
            device_type=DeviceType.OTHER,
            browser="",
            os="",
            device_name="",
        ),
        revoked_at=None,
        revoke_reason=None,
    )
    step = LineageStep(
        token_id=uuid.uuid4(),
        successor_token_id=None,
        presented_at=_NOW,
        origin=RequestOrigin(),
        outcome=outcome,
        within_grace=False,
    )
    return SessionLineage(
        session=session,
        initial_token_id=None,
        steps=(step,),
        truncated=False,
        reuse=None,
    )


@pytest.mark.parametrize("outcome", list(RefreshOutcome), ids=lambda outcome: outcome.value)
def test_each_outcome_is_sent_as_the_proto_value_of_its_name(outcome: RefreshOutcome) -> None:
    [sent] = lineage_response(_lineage(outcome), None).steps

    assert pb.RefreshOutcome.Name(sent.outcome) == f"REFRESH_OUTCOME_{outcome.name}"


def test_every_proto_outcome_has_a_domain_one() -> None:
    ours = {f"REFRESH_OUTCOME_{outcome.name}" for outcome in RefreshOutcome}

    assert set(pb.RefreshOutcome.keys()) - ours == {"REFRESH_OUTCOME_UNSPECIFIED"}


def test_the_table_takes_exactly_the_domain_outcomes() -> None:
    [migration] = [m for m in bundled_migrations() if m.name == "create_refresh_lineage"]
    check = re.search(r"CHECK \(outcome IN \(([^)]*)\)\)", migration.sql)
    assert check is not None

    assert set(re.findall(r"'(\w+)'", check[1])) == {outcome.value for outcome in RefreshOutcome}
