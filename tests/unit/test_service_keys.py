"""Service keys and their settings: the shape secret scanners rely on, and configuration that
is refused before the server starts, naming the variable and never repeating a key."""

from __future__ import annotations

import re
import string
import zlib
from pathlib import Path

import pytest

from authsvc import config as config_module
from authsvc.config import Config, ConfigError
from authsvc.service_keys import mint_service_key

_BASE62 = string.digits + string.ascii_letters
# What a secret scanner's rule matches: the prefix, 43 random characters, a 6-character CRC-32.
_SCANNER_RULE = re.compile(r"authsvc_sk_([0-9A-Za-z]{43})([0-9A-Za-z]{6})")


def _from_env(**environ: str) -> Config:
    return config_module.from_env(environ=environ)


def _base62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + _BASE62.index(char)
    return number


def test_a_minted_key_has_the_shape_a_secret_scanner_matches_and_checks() -> None:
    key, _ = mint_service_key("billing")

    match = _SCANNER_RULE.fullmatch(key)
    assert match is not None, key
    assert _base62(match[2]) == zlib.crc32(match[1].encode())


def test_each_minted_key_is_new() -> None:
    keys = {mint_service_key("billing")[0] for _ in range(100)}

    assert len(keys) == 100


def test_the_entry_names_the_service_and_holds_a_hash_not_the_key() -> None:
    key, entry = mint_service_key("billing")

    config = _from_env(AUTHSVC_SERVICE_KEYS=entry)

    assert config.service_keys.names == ("billing",)
    assert key not in entry
    assert config.service_keys.identify(key) == "billing"


def test_service_keys_print_their_names_only() -> None:
    _, entry = mint_service_key("billing")

    config = _from_env(AUTHSVC_SERVICE_KEYS=entry)

    assert entry.split(":")[-1] not in repr(config)
    assert "'billing'" in repr(config.service_keys)


def test_a_key_given_where_its_entry_belongs_is_refused_without_repeating_it() -> None:
    key, _ = mint_service_key("billing")

    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_SERVICE_KEYS=key)

    assert "AUTHSVC_SERVICE_KEYS" in str(caught.value)
    assert key[len("authsvc_sk_") :] not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ["billing", "billing:sha256:abc", "billing:md5:" + "a" * 64, "bad name:sha256:" + "a" * 64],
)
def test_a_malformed_entry_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_SERVICE_KEYS=value)

    assert "AUTHSVC_SERVICE_KEYS" in str(caught.value)


def test_the_same_key_entered_twice_is_a_config_error() -> None:
    _, entry = mint_service_key("billing")

    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_SERVICE_KEYS=f"{entry},{entry}")

    assert "AUTHSVC_SERVICE_KEYS" in str(caught.value)


def test_certificate_identities_without_mutual_tls_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_SERVICE_IDENTITIES="spiffe://example.org/billing")

    assert "AUTHSVC_TLS_CLIENT_CA_FILE" in str(caught.value)


def test_requiring_service_credentials_with_none_configured_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_REQUIRE_SERVICE_CREDENTIALS="true")

    assert "AUTHSVC_SERVICE_KEYS" in str(caught.value)


def test_certificate_identities_are_a_comma_separated_list(tmp_path: Path) -> None:
    pem = tmp_path / "any.pem"
    pem.write_text("checked where it is used")
    tls = {f"AUTHSVC_TLS_{name}": str(pem) for name in ("CERT_FILE", "KEY_FILE", "CLIENT_CA_FILE")}

    config = _from_env(
        AUTHSVC_SERVICE_IDENTITIES="spiffe://example.org/billing, feed.internal", **tls
    )

    assert config.service_identities == ("spiffe://example.org/billing", "feed.internal")
