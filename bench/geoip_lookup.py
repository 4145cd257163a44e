"""What a GeoIP lookup costs at sign-in, and whether it belongs off the event loop.

Writes a database whose record is shaped like a GeoLite2-City one (continent, country,
registered country, subdivision and city, each named in GeoLite2's eight languages, plus
location and postal code), then times `GeoIpLocator.locate` as the server calls it, with
maxminddb's C extension and with its pure-Python reader, for an address in the database
and one not in it, beside the cost of handing a call to a thread and back
(`loop.run_in_executor`), which moving the lookup off the loop would add.

    .venv/bin/python -m bench.geoip_lookup
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import geoip2.database
import maxminddb
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

from authsvc.geoip import GeoIpLocator, _lookup_for

_LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")
_ROUNDS = 20_000


def _names(name: str) -> dict[str, str]:
    return {language: f"{name} ({language})" for language in _LANGUAGES}


def _record() -> dict[str, object]:
    country = {"geoname_id": 2921044, "iso_code": "DE", "names": _names("Germany")}
    return {
        "city": {"geoname_id": 2867714, "names": _names("Munich")},
        "continent": {"code": "EU", "geoname_id": 6255148, "names": _names("Europe")},
        "country": country,
        "registered_country": country,
        "location": {
            "accuracy_radius": 20,
            "latitude": 48.1374,
            "longitude": 11.5755,
            "time_zone": "Europe/Berlin",
        },
        "postal": {"code": "80331"},
        "subdivisions": [{"geoname_id": 2951839, "iso_code": "BY", "names": _names("Bavaria")}],
    }


def _write(path: Path) -> None:
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City",
        languages=list(_LANGUAGES),
        description="bench",
    )
    writer.insert_network(IPSet(["81.2.69.0/24"]), _record())
    writer.to_db_file(str(path))


def _microseconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(_ROUNDS):
        call()
    return (time.perf_counter() - started) / _ROUNDS * 1e6


async def _hop_microseconds() -> float:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        for _ in range(_ROUNDS // 10):
            await loop.run_in_executor(pool, int)
        return (time.perf_counter() - started) / (_ROUNDS // 10) * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "city.mmdb"
        _write(path)
        for label, mode in (
            ("C extension", maxminddb.MODE_MMAP_EXT),
            ("pure Python", maxminddb.MODE_MMAP),
        ):
            reader = geoip2.database.Reader(str(path), locales=["en"], mode=mode)
            locator = GeoIpLocator(reader, _lookup_for(reader, str(path)))
            found = _microseconds(lambda: locator.locate("81.2.69.160"))  # noqa: B023
            missed = _microseconds(lambda: locator.locate("10.1.2.3"))  # noqa: B023
            print(f"{label:12} in the database {found:6.1f} us, not in it {missed:6.1f} us")
            locator.close()
    print(
        f"{'executor hop':12} {asyncio.run(_hop_microseconds()):6.1f} us (run_in_executor and back)"
    )


if __name__ == "__main__":
    main()
