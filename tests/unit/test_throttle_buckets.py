"""Which throttle bucket a client address counts against."""

from __future__ import annotations

import pytest

from authsvc.domain.throttle import ip_bucket


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "ip:203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", "ip:2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "ip:203.0.113.7"),
    ],
)
def test_ipv4_counts_per_address_and_ipv6_per_64_network(address: str, bucket: str) -> None:
    assert ip_bucket(address) == bucket


def test_addresses_in_different_ipv6_64_networks_count_apart() -> None:
    assert ip_bucket("2001:db8:1:2::1") != ip_bucket("2001:db8:1:3::1")
