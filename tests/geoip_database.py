"""Small MaxMind-format databases for the GeoIP tests, written with mmdb-writer and shaped
like GeoLite2's records (country.iso_code, city.names by language).

`python -m tests.geoip_database PATH` writes CITIES to PATH, for the Node client's tests.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

__all__ = ["CITIES", "LOOPBACK", "Place", "write_database"]


@dataclass(frozen=True, slots=True)
class Place:
    """A record: its country code and its city's name by language (none: no city)."""

    country: str
    city: Mapping[str, str] = field(default_factory=dict)

    @property
    def english_city(self) -> str:
        return self.city.get("en", "")


# The loopback network, so that a client on this machine has a location without a proxy.
LOOPBACK = Place("NZ", {"en": "Wellington", "mi": "Te Whanganui-a-Tara"})
CITIES: Mapping[str, Place] = {
    "81.2.69.0/24": Place("GB", {"en": "London", "de": "London"}),
    "2001:db8:1::/48": Place("DE", {"de": "München", "en": "Munich"}),
    # A country whose record names no city, as GeoLite2 has for many addresses.
    "89.160.20.0/24": Place("SE"),
    "127.0.0.0/8": LOOPBACK,
}


def _record(place: Place, *, with_city: bool) -> dict[str, object]:
    record: dict[str, object] = {"country": {"iso_code": place.country, "names": {}}}
    if with_city and place.city:
        record["city"] = {"names": dict(place.city)}
    return record


def write_database(
    path: Path,
    networks: Mapping[str, Place] = CITIES,
    *,
    database_type: str = "GeoLite2-City",
) -> Path:
    """A database of `networks` (IPv4 and IPv6, as GeoLite2's files are) at `path`. A
    Country database's records name no city."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description="authsvc test database",
    )
    for network, place in networks.items():
        writer.insert_network(
            IPSet([network]), _record(place, with_city="Country" not in database_type)
        )
    writer.to_db_file(str(path))
    return path


if __name__ == "__main__":
    write_database(Path(sys.argv[1]))
