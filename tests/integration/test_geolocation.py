"""GeoIP (AUTHSVC_GEOIP_DATABASE): a session's country and city, from a MaxMind database
the test writes, over a real socket against a real PostgreSQL.

The servers trust x-forwarded-for from 127.0.0.1, so one test client can sign in from
any address it names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from authsvc import config as config_module
from authsvc.config import ConfigError
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import ConfigFactory, Launch
from tests.geoip_database import CITIES, Place, write_database
from tests.helpers import PASSWORD, Stub, bearer, refresh, register
from tests.processes import authsvc_env, run_authsvc

pytestmark = pytest.mark.asyncio

StartServer = Callable[..., Any]

EMAIL = "alice@example.com"
PROXY = "127.0.0.1/32"
# In no network of the test database.
ELSEWHERE = "203.0.113.7"


@pytest.fixture
def cities(tmp_path: Path) -> Path:
    return write_database(tmp_path / "cities.mmdb")


async def start(launch: Launch, database: Path | None, *, reveals_accounts: bool = False) -> Stub:
    reveals = "true" if reveals_accounts else "false"
    if database is None:
        launched = await launch(trusted_proxies=PROXY, registration_reveals_accounts=reveals)
    else:
        launched = await launch(
            trusted_proxies=PROXY,
            registration_reveals_accounts=reveals,
            geoip_database=str(database),
        )
    return launched.stub


def from_address(address: str) -> tuple[tuple[str, str]]:
    return (("x-forwarded-for", address),)


async def login_from(stub: Stub, address: str) -> pb.LoginResponse:
    response: pb.LoginResponse = await stub.Login(
        pb.LoginRequest(email=EMAIL, password=PASSWORD), metadata=from_address(address)
    )
    return response


async def listed(stub: Stub, access_token: str, session_id: str) -> pb.Session:
    response: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(), metadata=bearer(access_token)
    )
    [session] = [s for s in response.sessions if s.session_id == session_id]
    return session


async def location_after_login(stub: Stub, address: str) -> tuple[str, str]:
    await register(stub, email=EMAIL)
    signed_in = await login_from(stub, address)
    session = await listed(stub, signed_in.access_token, signed_in.session_id)
    return session.country, session.city


@pytest.mark.parametrize(
    ("address", "network"),
    [("81.2.69.160", "81.2.69.0/24"), ("2001:db8:1::7", "2001:db8:1::/48")],
    ids=["ipv4", "ipv6"],
)
async def test_login_lists_the_country_and_english_city_of_its_address(
    launch: Launch, cities: Path, address: str, network: str
) -> None:
    stub = await start(launch, cities)

    located = await location_after_login(stub, address)

    place = CITIES[network]
    assert located == (place.country, place.english_city)


async def test_login_from_an_address_whose_record_has_no_city_lists_the_country_only(
    launch: Launch, cities: Path
) -> None:
    stub = await start(launch, cities)

    located = await location_after_login(stub, "89.160.20.112")

    assert located == (CITIES["89.160.20.0/24"].country, "")


@pytest.mark.parametrize("address", [ELSEWHERE, "10.1.2.3", "fd00::1"])
async def test_login_from_an_address_not_in_the_database_lists_no_location(
    launch: Launch, cities: Path, address: str
) -> None:
    stub = await start(launch, cities)

    located = await location_after_login(stub, address)

    assert located == ("", "")


async def test_without_a_database_a_login_lists_no_location(launch: Launch) -> None:
    stub = await start(launch, None)

    located = await location_after_login(stub, "81.2.69.160")

    assert located == ("", "")


async def test_register_that_signs_in_records_the_location_of_its_address(
    launch: Launch, cities: Path
) -> None:
    stub = await start(launch, cities, reveals_accounts=True)

    registered: pb.RegisterResponse = await stub.Register(
        pb.RegisterRequest(email=EMAIL, password=PASSWORD), metadata=from_address("81.2.69.160")
    )

    session = await listed(stub, registered.access_token, registered.session_id)
    assert (session.country, session.city) == ("GB", "London")


async def test_refresh_from_another_address_keeps_the_location_of_the_login(
    launch: Launch, cities: Path
) -> None:
    stub = await start(launch, cities)
    await register(stub, email=EMAIL)
    signed_in = await login_from(stub, "81.2.69.160")

    refreshed: pb.RefreshResponse = await stub.Refresh(
        pb.RefreshRequest(refresh_token=signed_in.refresh_token),
        metadata=from_address("2001:db8:1::7"),
    )

    session = await listed(stub, refreshed.access_token, signed_in.session_id)
    assert (session.ip_address, session.country, session.city) == ("81.2.69.160", "GB", "London")


async def test_country_database_lists_the_country_and_no_city(
    launch: Launch, tmp_path: Path
) -> None:
    countries = write_database(tmp_path / "countries.mmdb", database_type="GeoLite2-Country")
    stub = await start(launch, countries)

    located = await location_after_login(stub, "81.2.69.160")

    assert located == ("GB", "")


async def test_enterprise_database_lists_the_country_and_city(
    launch: Launch, tmp_path: Path
) -> None:
    enterprise = write_database(tmp_path / "enterprise.mmdb", database_type="GeoIP2-Enterprise")
    stub = await start(launch, enterprise)

    located = await location_after_login(stub, "81.2.69.160")

    assert located == ("GB", "London")


async def test_sessions_keep_their_location_when_the_server_restarts_without_a_database(
    launch: Launch, cities: Path
) -> None:
    located = await start(launch, cities)
    await register(located, email=EMAIL)
    signed_in = await login_from(located, "81.2.69.160")
    plain = await start(launch, None)

    refreshed = await refresh(plain, signed_in.refresh_token)

    session = await listed(plain, refreshed.access_token, signed_in.session_id)
    assert (session.country, session.city) == ("GB", "London")


async def test_login_whose_record_is_damaged_signs_in_without_a_location(
    launch: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The search tree is whole (the start's lookup passes), the records behind it are not.
    stub = await start(launch, _damaged_records(tmp_path))
    caplog.set_level(logging.WARNING, logger="authsvc.geoip")

    located = await location_after_login(stub, "81.2.69.160")

    assert located == ("", "")
    events = {getattr(r, "event", None) for r in caplog.records if r.name == "authsvc.geoip"}
    assert events == {"geoip_lookup_failed"}


def _damaged_records(tmp_path: Path) -> Path:
    path = write_database(tmp_path / "damaged.mmdb")
    whole = path.read_bytes()
    with maxminddb.open_database(str(path)) as reader:
        metadata = reader.metadata()
    # The data section: after the tree and its 16-byte separator, up to the metadata.
    start = metadata.node_count * metadata.record_size * 2 // 8 + 16
    end = whole.rfind(b"\xab\xcd\xefMaxMind.com")
    path.write_bytes(whole[:start] + b"\xff" * (end - start) + whole[end:])
    return path


# --- a database that cannot be used stops the start, naming the variable ---


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "random.mmdb"
    path.write_bytes(bytes(range(256)) * 20)
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mmdb"
    path.write_bytes(b"")
    return path


def _truncated(tmp_path: Path) -> Path:
    whole = write_database(tmp_path / "whole.mmdb").read_bytes()
    path = tmp_path / "truncated.mmdb"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _corrupt_tree(tmp_path: Path) -> Path:
    # The search tree comes first in the file; the metadata at its end still reads.
    data = bytearray(write_database(tmp_path / "whole.mmdb").read_bytes())
    data[:64] = b"\xff" * 64
    path = tmp_path / "corrupt.mmdb"
    path.write_bytes(bytes(data))
    return path


def _asn_database(tmp_path: Path) -> Path:
    return write_database(
        tmp_path / "asn.mmdb", {"81.2.69.0/24": Place("GB")}, database_type="GeoLite2-ASN"
    )


@pytest.mark.parametrize(
    "make", [_not_a_database, _empty, _truncated, _corrupt_tree, _asn_database]
)
async def test_server_refuses_a_file_it_cannot_locate_addresses_with(
    start_server: StartServer,
    config_factory: ConfigFactory,
    tmp_path: Path,
    make: Callable[[Path], Path],
) -> None:
    config = config_factory(geoip_database=str(make(tmp_path)))

    with pytest.raises(ConfigError) as caught:
        await start_server(config)

    assert "AUTHSVC_GEOIP_DATABASE" in str(caught.value)


async def test_a_missing_database_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "GeoLite2-City.mmdb")

    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={"AUTHSVC_GEOIP_DATABASE": missing})

    assert "AUTHSVC_GEOIP_DATABASE" in str(caught.value)


async def test_serve_with_workers_exits_2_naming_the_variable_for_a_corrupt_database(
    pg_dsn: str, tmp_path: Path
) -> None:
    env = authsvc_env(
        pg_dsn,
        AUTHSVC_HOST="127.0.0.1",
        AUTHSVC_PORT="0",
        AUTHSVC_WORKERS="2",
        AUTHSVC_GEOIP_DATABASE=str(_corrupt_tree(tmp_path)),
    )

    run = await run_authsvc("serve", env=env)

    assert run.code == 2, run.stderr
    assert "configuration error: AUTHSVC_GEOIP_DATABASE" in run.stderr
