"""RevokeSessions' filter as the domain checks it: canonical forms, and the refusals that
name their field."""

from __future__ import annotations

import uuid

import pytest

from authsvc.core.errors import InvalidArgument
from authsvc.core.models import DeviceType, UserId
from authsvc.core.session_filters import SessionFilter
from authsvc.domain.bulk_revocation import MAX_FILTER_USER_IDS, checked_filter


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("203.0.113.77/24", "203.0.113.0/24"),
        ("198.51.100.7", "198.51.100.7/32"),
        (" 2001:DB8::1/32 ", "2001:db8::/32"),
        ("2001:db8::1", "2001:db8::1/128"),
    ],
)
def test_a_cidr_is_kept_in_canonical_form_with_its_host_bits_cleared(
    given: str, canonical: str
) -> None:
    assert checked_filter(SessionFilter(ip_cidr=given)).ip_cidr == canonical


def test_repeated_user_ids_and_device_types_count_once() -> None:
    user = UserId(uuid.uuid4())

    checked = checked_filter(
        SessionFilter(user_ids=(user, user), device_types=(DeviceType.BOT, DeviceType.BOT))
    )

    assert (checked.user_ids, checked.device_types) == ((user,), (DeviceType.BOT,))


def test_one_user_id_past_the_cap_is_refused() -> None:
    users = tuple(UserId(uuid.uuid4()) for _ in range(MAX_FILTER_USER_IDS + 1))

    with pytest.raises(InvalidArgument) as refused:
        checked_filter(SessionFilter(user_ids=users))

    assert refused.value.field == "filter.user_ids"


def test_an_empty_filter_needs_match_all() -> None:
    with pytest.raises(InvalidArgument) as refused:
        checked_filter(SessionFilter())

    assert refused.value.field == "filter"
    assert checked_filter(SessionFilter(match_all=True)).match_all


def test_a_user_agent_of_blanks_is_no_filter() -> None:
    with pytest.raises(InvalidArgument) as refused:
        checked_filter(SessionFilter(user_agent_contains="   "))

    assert refused.value.field == "filter"
