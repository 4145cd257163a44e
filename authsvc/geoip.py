"""GeoIP: the country and city of a login address, from a MaxMind database (geoip2).

The database (AUTHSVC_GEOIP_DATABASE) is opened once per process, memory-mapped, and tried
before the port opens: a file that is not a MaxMind City or Country database, or whose
search tree is corrupt, is a ConfigError naming the variable, not a failure at each login.
Without the setting nothing is opened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import geoip2.database
import maxminddb
from geoip2.errors import AddressNotFoundError

from authsvc.config import Config, ConfigError
from authsvc.core.models import Location

__all__ = ["GeoIpLocator", "open_geoip_database"]

_log = logging.getLogger(__name__)

_VARIABLE = "AUTHSVC_GEOIP_DATABASE"
_NOWHERE = Location()
# Looked up once at start, so that a corrupt search tree fails there. No database holds it.
_PROBE_ADDRESS = "192.0.2.1"

_Lookup = Callable[[str], Location]


class GeoIpLocator:
    """domain.sessions.Locator on an open MaxMind database; `close()` unmaps it."""

    __slots__ = ("_lookup", "_reader")

    def __init__(self, reader: geoip2.database.Reader, lookup: _Lookup) -> None:
        self._reader = reader
        self._lookup = lookup

    def locate(self, ip_address: str) -> Location:
        try:
            return self._lookup(ip_address)
        except (AddressNotFoundError, ValueError):
            # Private, reserved or unallocated (no database holds them), or no address.
            return _NOWHERE
        except Exception as exc:
            # A damaged part of the file (InvalidDatabaseError, or whatever the pure-Python
            # decoder trips on): the sign-in goes on without its location. Its message would
            # name the address, so only its type is logged.
            _log.warning(
                "GeoIP lookup failed (%s): is the database file damaged?",
                type(exc).__name__,
                extra={"event": "geoip_lookup_failed", "error": type(exc).__name__},
            )
            return _NOWHERE

    def close(self) -> None:
        self._reader.close()


def _lookup_for(reader: geoip2.database.Reader, path: str) -> _Lookup:
    database_type = reader.metadata().database_type
    # By the type's name, as geoip2 checks it: GeoLite2-City and GeoIP2-City are City
    # databases, GeoIP2-Enterprise a superset of one.
    if "City" in database_type:

        def city(ip_address: str) -> Location:
            found = reader.city(ip_address)
            return Location(country=found.country.iso_code or "", city=found.city.name or "")

        return city
    if "Enterprise" in database_type:

        def enterprise(ip_address: str) -> Location:
            found = reader.enterprise(ip_address)
            return Location(country=found.country.iso_code or "", city=found.city.name or "")

        return enterprise
    if "Country" in database_type:

        def country(ip_address: str) -> Location:
            return Location(country=reader.country(ip_address).country.iso_code or "")

        return country
    raise ConfigError(
        f"{_VARIABLE}: {path!r} is a {database_type!r} database; it takes a City or Country "
        "database, such as GeoLite2-City or GeoLite2-Country"
    )


def open_geoip_database(config: Config) -> GeoIpLocator | None:
    """The configured database, opened and tried; None without the setting."""
    if config.geoip_database is None:
        return None
    path = str(config.geoip_database)
    try:
        # The C extension's memory map where it is installed (the wheels have it), else
        # the pure-Python one: either maps the file rather than reading it into memory.
        reader = geoip2.database.Reader(path, locales=["en"], mode=maxminddb.MODE_AUTO)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigError(f"{_VARIABLE}: {path!r} is not a MaxMind database: {exc}") from exc
    try:
        lookup = _lookup_for(reader, path)
        try:
            lookup(_PROBE_ADDRESS)
        except AddressNotFoundError:
            pass
        except maxminddb.InvalidDatabaseError as exc:
            raise ConfigError(f"{_VARIABLE}: {path!r} is corrupt: {exc}") from exc
    except ConfigError:
        reader.close()
        raise
    return GeoIpLocator(reader, lookup)
