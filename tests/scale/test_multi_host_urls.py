"""A database URL naming several hosts must ask for the primary (target_session_attrs), or the
service could settle on a standby and fail every write (docs/operations.md, Failover)."""

from __future__ import annotations

import pytest

from authsvc import config as config_module
from authsvc.config import Config, ConfigError
from tests.conftest import TEST_SETTINGS

TWO_HOSTS = "postgresql://authsvc@db-a:5432,db-b:5432/authsvc"
TWO_SOCKETS = "postgresql://authsvc@/authsvc?host=/run/a,/run/b"


def _config(**overrides: str) -> Config:
    return config_module.from_env(environ={}, overrides={**TEST_SETTINGS, **overrides})


@pytest.mark.parametrize("url", [TWO_HOSTS, TWO_SOCKETS, f"{TWO_HOSTS}?target_session_attrs=any"])
@pytest.mark.parametrize("setting", ["database_url", "listen_database_url"])
def test_a_url_naming_several_hosts_without_asking_for_the_primary_is_refused(
    setting: str, url: str
) -> None:
    with pytest.raises(ConfigError, match=f"AUTHSVC_{setting.upper()} names several hosts"):
        _config(**{"database_url": "postgresql://authsvc@db-a/authsvc", setting: url})


@pytest.mark.parametrize("target", ["read-write", "primary"])
def test_a_url_naming_several_hosts_and_asking_for_the_primary_is_accepted(target: str) -> None:
    url = f"{TWO_HOSTS}?target_session_attrs={target}"

    assert _config(database_url=url).database_url == url
