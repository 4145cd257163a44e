"""The passkey (WebAuthn) settings, without a server."""

from __future__ import annotations

import pytest

from authsvc import config as config_module
from authsvc.config import Config, ConfigError


def _from_env(**environ: str) -> Config:
    return config_module.from_env(environ=environ)


def test_passkeys_are_off_without_a_relying_party() -> None:
    config = _from_env()

    assert config.webauthn_rp_id is None
    assert config.webauthn_expected_origins == ()


def test_the_origin_defaults_to_https_on_the_relying_party() -> None:
    config = _from_env(AUTHSVC_WEBAUTHN_RP_ID="Example.COM")

    assert config.webauthn_rp_id == "example.com"
    assert config.webauthn_expected_origins == ("https://example.com",)


def test_listed_origins_replace_the_default() -> None:
    config = _from_env(
        AUTHSVC_WEBAUTHN_RP_ID="localhost",
        AUTHSVC_WEBAUTHN_ORIGINS="http://localhost:8080, https://app.example.com",
    )

    assert config.webauthn_expected_origins == ("http://localhost:8080", "https://app.example.com")


@pytest.mark.parametrize(
    "rp_id", ["https://example.com", "example.com:443", "example.com/x", "a..b"]
)
def test_a_relying_party_that_is_not_a_host_name_is_refused(rp_id: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_WEBAUTHN_RP_ID"):
        _from_env(AUTHSVC_WEBAUTHN_RP_ID=rp_id)


@pytest.mark.parametrize(
    "origin", ["example.com", "https://example.com/login", "ftp://example.com"]
)
def test_an_origin_with_a_path_or_without_a_scheme_is_refused(origin: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_WEBAUTHN_ORIGINS"):
        _from_env(AUTHSVC_WEBAUTHN_RP_ID="example.com", AUTHSVC_WEBAUTHN_ORIGINS=origin)
