"""AUTHSVC_SESSION_LIMIT and its policy: off by default, validated with the variable's
name, and what a session start asks the store to enforce."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from authsvc import config as config_module
from authsvc.config import ConfigError
from authsvc.core.models import RequestOrigin, SessionId
from authsvc.core.session_limits import SessionLimitPolicy
from authsvc.domain.session_limits import SessionLimit

NOW = datetime(2030, 1, 1, tzinfo=UTC)
ORIGIN = RequestOrigin(ip_address="203.0.113.7", user_agent="phone/1.0")


def test_the_limit_is_off_by_default_and_evicts_when_set() -> None:
    config = config_module.from_env(environ={})

    assert (config.session_limit, config.session_limit_policy) == (
        0,
        SessionLimitPolicy.EVICT_OLDEST,
    )


def test_an_unknown_policy_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={"AUTHSVC_SESSION_LIMIT_POLICY": "oldest"})

    assert str(caught.value) == (
        "AUTHSVC_SESSION_LIMIT_POLICY must be evict_oldest or refuse; got 'oldest'"
    )


def test_a_negative_limit_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={"AUTHSVC_SESSION_LIMIT": "-1"})

    assert str(caught.value) == "AUTHSVC_SESSION_LIMIT must be 0 or more; got '-1'"


def test_no_limit_asks_the_store_for_nothing() -> None:
    assert SessionLimit().cap(SessionId(uuid.uuid4()), ORIGIN, NOW) is None


def test_a_limit_asks_the_store_to_enforce_it_and_audit_evictions_from_the_login() -> None:
    new_session = SessionId(uuid.uuid4())

    cap = SessionLimit(max_live=3, policy=SessionLimitPolicy.REFUSE).cap(new_session, ORIGIN, NOW)

    assert cap is not None
    assert (cap.limit, cap.policy) == (3, SessionLimitPolicy.REFUSE)
    assert (cap.event.event, cap.event.origin, cap.event.occurred_at) == (
        "session_evicted",
        ORIGIN,
        NOW,
    )
    assert cap.event.detail == {"by_session_id": str(new_session), "session_limit": 3}
