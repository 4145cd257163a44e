"""Config: defaults, AUTHSVC_* parsing, flag precedence, validation naming the variable."""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from authsvc import config as config_module
from authsvc.config import Config, ConfigError

# Any 32 bytes in base64, under an id.
KEK = "k1:" + base64.b64encode(b"k" * 32).decode()


def _from_env(**environ: str) -> Config:
    return config_module.from_env(environ=environ)


def test_defaults_apply_when_nothing_is_set() -> None:
    config = _from_env()

    assert config.host == "0.0.0.0"  # noqa: S104
    assert config.port == 50051
    assert config.database_url is None
    assert config.data_dir == Path(".authsvc-data")
    assert config.signing_algorithm == "EdDSA"
    assert config.access_token_ttl == timedelta(minutes=15)
    assert config.session_idle_timeout == timedelta(days=7)
    assert config.session_lifetime == timedelta(days=7)
    assert config.remember_me_lifetime == timedelta(days=30)
    assert config.refresh_grace_period == timedelta(seconds=10)
    assert config.registration_enabled is True
    assert config.password_min_length == 8
    assert config.trusted_proxies == ()
    assert config.sweep_interval == timedelta(seconds=60)
    assert config.sweep_batch_size == 1000
    assert config.ended_session_retention == timedelta(days=30)
    assert config.shutdown_grace == timedelta(seconds=10)
    assert config.log_level == "INFO"


def test_workers_default_to_the_number_of_cpus() -> None:
    config = _from_env()

    assert config.workers == (os.cpu_count() or 1)


def test_the_package_imports_and_counts_workers_where_sched_getaffinity_is_missing() -> None:
    # macOS has no os.sched_getaffinity: delete it before anything imports the package.
    script = (
        "import os; del os.sched_getaffinity\n"
        "import authsvc.cli\n"
        "from authsvc.config import from_env\n"
        "print(from_env(environ={}).workers)"
    )

    run = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(os.cpu_count() or 1)


def test_workers_are_taken_from_the_environment() -> None:
    config = _from_env(AUTHSVC_WORKERS="3")

    assert config.workers == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", timedelta(minutes=15)),
        ("7d", timedelta(days=7)),
        ("250ms", timedelta(milliseconds=250)),
        ("30", timedelta(seconds=30)),
        ("10s", timedelta(seconds=10)),
        ("12h", timedelta(hours=12)),
        ("1.5h", timedelta(minutes=90)),
        (" 45s ", timedelta(seconds=45)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d12h", timedelta(days=2, hours=12)),
        ("1m30s", timedelta(minutes=1, seconds=30)),
        ("1s500ms", timedelta(seconds=1, milliseconds=500)),
    ],
)
def test_durations_are_parsed_from_the_environment(text: str, expected: timedelta) -> None:
    config = _from_env(AUTHSVC_SWEEP_INTERVAL=text)

    assert config.sweep_interval == expected


@pytest.mark.parametrize(
    "text", ["15 minutes", "5x", "-5s", "m", "30m1h", "1h1h", "1h 30m", "h30m", "."]
)
def test_malformed_duration_is_a_config_error_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_SWEEP_INTERVAL=text)

    assert str(caught.value) == (
        f"AUTHSVC_SWEEP_INTERVAL must be a duration such as 250ms, 30s, 1h30m or 7d; got {text!r}"
    )


def test_an_empty_duration_flag_is_a_config_error_naming_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={}, overrides={"sweep_interval": ""})

    assert str(caught.value).startswith("--sweep-interval must be a duration")


def test_a_malformed_integer_is_a_sentence_with_an_example() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_PORT="abc")

    assert str(caught.value) == "AUTHSVC_PORT must be a whole number, like 50051; got 'abc'"


def test_an_integer_below_its_range_says_the_range() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_HASH_WORKERS="0")

    assert str(caught.value) == "AUTHSVC_HASH_WORKERS must be at least 1; got '0'"


def test_an_unknown_variable_is_reported_with_the_closest_setting() -> None:
    unknown = config_module.unknown_variables({"AUTHSVC_ACESS_TOKEN_TTL": "5m"})

    assert unknown == [("AUTHSVC_ACESS_TOKEN_TTL", "AUTHSVC_ACCESS_TOKEN_TTL")]


def test_the_revoked_retention_variable_points_to_its_new_name_not_a_look_alike() -> None:
    # Its closest spelling is AUTHSVC_REVOCATION_RETENTION, a different setting.
    unknown = config_module.unknown_variables({"AUTHSVC_REVOKED_RETENTION": "7d"})

    assert unknown == [("AUTHSVC_REVOKED_RETENTION", "AUTHSVC_ENDED_SESSION_RETENTION")]


def test_settings_and_variables_other_parts_read_are_not_unknown() -> None:
    environ = {
        "AUTHSVC_ACCESS_TOKEN_TTL": "5m",
        "AUTHSVC_TEST_DATABASE_URL": "postgresql://localhost/test",
        "AUTHSVC_ADDR": "127.0.0.1:50051",
        "PATH": "/bin",
    }

    assert config_module.unknown_variables(environ) == []


def test_an_unknown_variable_warning_names_the_suggestion_but_not_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config_module.warn_about_unknown_variables({"AUTHSVC_ACESS_TOKEN_TTL": "s3cret-value"})

    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "AUTHSVC_ACCESS_TOKEN_TTL" in record.getMessage()
    assert "s3cret-value" not in record.getMessage()


@pytest.mark.parametrize(
    "variable",
    [
        "AUTHSVC_ACCESS_TOKEN_TTL",
        "AUTHSVC_LOGIN_FAILURE_WINDOW",
        "AUTHSVC_SWEEP_INTERVAL",
        "AUTHSVC_CONNECTION_IDLE_TIMEOUT",
        "AUTHSVC_CONNECTION_MAX_AGE",
    ],
)
def test_a_zero_duration_that_would_switch_a_feature_off_is_a_config_error(variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(**{variable: "0s"})

    assert variable in str(caught.value)


def test_a_zero_refresh_grace_period_is_allowed() -> None:
    assert _from_env(AUTHSVC_REFRESH_GRACE_PERIOD="0s").refresh_grace_period == timedelta(0)


def test_a_zero_connection_max_age_grace_is_allowed() -> None:
    config = _from_env(AUTHSVC_CONNECTION_MAX_AGE_GRACE="0s")

    assert config.connection_max_age_grace == timedelta(0)


@pytest.mark.parametrize(
    "variable",
    [
        "AUTHSVC_CONNECTION_IDLE_TIMEOUT",
        "AUTHSVC_CONNECTION_MAX_AGE",
        "AUTHSVC_CONNECTION_MAX_AGE_GRACE",
        "AUTHSVC_KEEPALIVE_MIN_INTERVAL",
    ],
)
def test_a_connection_timing_grpc_cannot_hold_in_milliseconds_is_a_config_error(
    variable: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(**{variable: "25d"})

    assert variable in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_booleans_are_parsed_from_the_environment(text: str, expected: bool) -> None:
    config = _from_env(AUTHSVC_REGISTRATION_ENABLED=text)

    assert config.registration_enabled is expected


def test_cidr_list_is_parsed_into_networks() -> None:
    config = _from_env(AUTHSVC_TRUSTED_PROXIES="10.0.0.0/8, 192.168.1.0/24,,fd00::/8")

    assert config.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.0/24"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_single_address_is_a_host_network() -> None:
    config = _from_env(AUTHSVC_TRUSTED_PROXIES="127.0.0.1")

    assert config.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),)


def test_empty_variable_counts_as_unset() -> None:
    config = _from_env(AUTHSVC_PORT="", AUTHSVC_SESSION_IDLE_TIMEOUT="")

    assert (config.port, config.session_idle_timeout) == (50051, timedelta(days=7))


def test_flag_overrides_the_environment() -> None:
    config = config_module.from_env(
        environ={"AUTHSVC_PORT": "1234", "AUTHSVC_SESSION_IDLE_TIMEOUT": "1h"},
        overrides={"port": "4321", "session_idle_timeout": None},
    )

    assert config.port == 4321
    assert config.session_idle_timeout == timedelta(hours=1)


def test_flag_overrides_an_invalid_environment_value() -> None:
    config = config_module.from_env(
        environ={"AUTHSVC_PORT": "notaport"}, overrides={"port": "8080"}
    )

    assert config.port == 8080


def test_invalid_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={}, overrides={"port": "notaport"})

    assert "--port" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHSVC_SESSION_IDLE_TIMEOUT", "soon"),
        ("AUTHSVC_SESSION_IDLE_TIMEOUT", "0s"),
        ("AUTHSVC_SESSION_LIFETIME", "0"),
        ("AUTHSVC_ACCESS_TOKEN_TTL", "0ms"),
        ("AUTHSVC_PORT", "notaport"),
        ("AUTHSVC_PORT", "65536"),
        ("AUTHSVC_REGISTRATION_ENABLED", "maybe"),
        ("AUTHSVC_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("AUTHSVC_TRUSTED_PROXIES", "not-a-network"),
        ("AUTHSVC_SIGNING_ALGORITHM", "HS256"),
        ("AUTHSVC_DB_POOL_MAX_SIZE", "0"),
        ("AUTHSVC_DB_POOL_MAX_SIZE", "1"),
        ("AUTHSVC_DB_POOL_MIN_SIZE", "many"),
        ("AUTHSVC_DB_POOL_MIN_SIZE", "-1"),
        ("AUTHSVC_HASH_WORKERS", "0"),
        ("AUTHSVC_WORKERS", "0"),
        ("AUTHSVC_WORKERS", "two"),
        ("AUTHSVC_PASSWORD_MIN_LENGTH", "eight"),
        ("AUTHSVC_SWEEP_BATCH_SIZE", "-10"),
        ("AUTHSVC_LOG_LEVEL", "verbose"),
        ("AUTHSVC_HTTP_PORT", "65536"),
        ("AUTHSVC_HTTP_READ_TIMEOUT", "0s"),
        # jwks_uri is built from it: an absolute http(s) URL, nothing after the path.
        ("AUTHSVC_HTTP_PUBLIC_URL", "auth.example.com"),
        ("AUTHSVC_HTTP_PUBLIC_URL", "ftp://auth.example.com"),
        ("AUTHSVC_HTTP_PUBLIC_URL", "https://"),
        ("AUTHSVC_HTTP_PUBLIC_URL", "https://auth.example.com/?tenant=1"),
        ("AUTHSVC_HTTP_PUBLIC_URL", "https://auth.example.com/#keys"),
    ],
)
def test_invalid_value_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={variable: value})

    assert variable in str(caught.value)


def test_secret_repr_hides_the_database_url() -> None:
    url = "postgresql://app:hunter2@db.internal:5432/auth"

    config = _from_env(AUTHSVC_DATABASE_URL=url, AUTHSVC_KEY_ENCRYPTION_KEYS=KEK)

    assert repr(config.database_url) == "'***'"
    assert "hunter2" not in repr(config)
    assert "db.internal" not in repr(config)


def test_secret_keeps_its_value_for_use() -> None:
    url = "postgresql://app:hunter2@db.internal:5432/auth"

    config = _from_env(AUTHSVC_DATABASE_URL=url, AUTHSVC_KEY_ENCRYPTION_KEYS=KEK)

    assert str(config.database_url) == url


def test_remember_me_lifetime_shorter_than_session_lifetime_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_SESSION_LIFETIME="7d", AUTHSVC_REMEMBER_ME_LIFETIME="1d")

    assert "AUTHSVC_REMEMBER_ME_LIFETIME" in str(caught.value)


def test_remember_me_lifetime_equal_to_session_lifetime_is_accepted() -> None:
    config = _from_env(AUTHSVC_SESSION_LIFETIME="7d", AUTHSVC_REMEMBER_ME_LIFETIME="7d")

    assert config.remember_me_lifetime == config.session_lifetime


def test_pool_min_size_above_max_size_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_DB_POOL_MIN_SIZE="5", AUTHSVC_DB_POOL_MAX_SIZE="4")

    assert "AUTHSVC_DB_POOL_MIN_SIZE" in str(caught.value)


def test_argon2_memory_below_eight_kib_per_lane_is_rejected() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_ARGON2_MEMORY_KIB="16", AUTHSVC_ARGON2_PARALLELISM="4")

    assert "AUTHSVC_ARGON2_MEMORY_KIB" in str(caught.value)


def _pem_files(tmp_path: Path, *names: str) -> dict[str, str]:
    """AUTHSVC_<NAME> -> a readable file; config checks only that it opens."""
    environ = {}
    for name in names:
        path = tmp_path / f"{name.lower()}.pem"
        path.write_text("PEM\n")
        environ[f"AUTHSVC_{name}"] = str(path)
    return environ


def test_tls_is_off_by_default() -> None:
    config = _from_env()

    files = {name: getattr(config, name) for name in vars(Config) if name.startswith("tls_")}

    assert files == dict.fromkeys(files, None)
    assert len(files) == 5


def test_the_http_port_is_off_by_default_and_listens_where_grpc_does() -> None:
    config = _from_env(AUTHSVC_HOST="127.0.0.1")

    assert config.http_port is None
    assert config.http_listen_host == "127.0.0.1"


def test_the_http_port_listens_on_its_own_address_when_given_one() -> None:
    config = _from_env(AUTHSVC_HOST="127.0.0.1", AUTHSVC_HTTP_HOST="0.0.0.0")  # noqa: S104

    assert config.http_listen_host == "0.0.0.0"  # noqa: S104


def test_tls_files_are_taken_as_paths(tmp_path: Path) -> None:
    environ = _pem_files(tmp_path, "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE")

    config = _from_env(**environ)

    assert config.tls_client_ca_file == Path(environ["AUTHSVC_TLS_CLIENT_CA_FILE"])


def test_tls_key_without_cert_is_rejected_naming_the_cert_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(**_pem_files(tmp_path, "TLS_KEY_FILE"))

    assert "AUTHSVC_TLS_CERT_FILE" in str(caught.value)


def test_tls_cert_without_key_is_rejected_naming_the_key_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(**_pem_files(tmp_path, "TLS_CERT_FILE"))

    assert "AUTHSVC_TLS_KEY_FILE" in str(caught.value)


def test_tls_client_ca_without_server_cert_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(**_pem_files(tmp_path, "TLS_CLIENT_CA_FILE"))

    assert "AUTHSVC_TLS_CLIENT_CA_FILE" in str(caught.value)


def test_tls_client_cert_without_its_key_is_rejected(tmp_path: Path) -> None:
    environ = _pem_files(tmp_path, "TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CERT_FILE")

    with pytest.raises(ConfigError) as caught:
        _from_env(**environ)

    assert "AUTHSVC_TLS_CLIENT_KEY_FILE" in str(caught.value)


def test_tls_client_cert_without_server_cert_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(**_pem_files(tmp_path, "TLS_CLIENT_CERT_FILE", "TLS_CLIENT_KEY_FILE"))

    assert "AUTHSVC_TLS_CLIENT_CERT_FILE" in str(caught.value)


@pytest.mark.parametrize(
    "name",
    [
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "TLS_CLIENT_CA_FILE",
        "TLS_CLIENT_CERT_FILE",
        "TLS_CLIENT_KEY_FILE",
    ],
)
def test_tls_missing_file_is_a_config_error_naming_the_variable(tmp_path: Path, name: str) -> None:
    environ = _pem_files(
        tmp_path,
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "TLS_CLIENT_CA_FILE",
        "TLS_CLIENT_CERT_FILE",
        "TLS_CLIENT_KEY_FILE",
    )
    environ[f"AUTHSVC_{name}"] = str(tmp_path / "missing.pem")

    with pytest.raises(ConfigError) as caught:
        _from_env(**environ)

    assert f"AUTHSVC_{name}" in str(caught.value)


def test_tls_directory_is_not_a_readable_file(tmp_path: Path) -> None:
    environ = _pem_files(tmp_path, "TLS_KEY_FILE")

    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_TLS_CERT_FILE=str(tmp_path), **environ)

    assert "AUTHSVC_TLS_CERT_FILE" in str(caught.value)


def test_tls_missing_file_given_as_a_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={}, overrides={"tls_cert_file": str(tmp_path / "no.pem")})

    assert "--tls-cert-file" in str(caught.value)


def test_key_encryption_keys_print_their_ids_but_never_their_secrets() -> None:
    secret = base64.b64encode(b"s" * 32).decode()

    config = _from_env(AUTHSVC_KEY_ENCRYPTION_KEYS=f"new:{secret},{KEK}")

    assert config.configured_key_encryption_keys is not None
    assert config.configured_key_encryption_keys.ids == ("new", "k1")
    assert secret not in repr(config)
    assert "'new'" in repr(config.key_encryption_keys)


@pytest.mark.parametrize(
    "value",
    ["k1", ":" + "A" * 44, "k1:c2hvcnQ=", "k1:not base64!", f"{KEK},{KEK}", "bad id:" + "A" * 44],
)
def test_malformed_key_encryption_keys_are_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_KEY_ENCRYPTION_KEYS=value)

    assert "AUTHSVC_KEY_ENCRYPTION_KEYS" in str(caught.value)
    assert "c2hvcnQ" not in str(caught.value)


def test_key_encryption_keys_file_holds_one_key_per_line(tmp_path: Path) -> None:
    secret = base64.b64encode(b"s" * 32).decode()
    path = tmp_path / "keks"
    path.write_text(f"new:{secret}\n{KEK}\n")

    config = _from_env(AUTHSVC_KEY_ENCRYPTION_KEYS_FILE=str(path))

    assert config.configured_key_encryption_keys is not None
    assert config.configured_key_encryption_keys.ids == ("new", "k1")


def test_key_encryption_keys_and_their_file_together_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "keks"
    path.write_text(KEK)

    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_KEY_ENCRYPTION_KEYS=KEK, AUTHSVC_KEY_ENCRYPTION_KEYS_FILE=str(path))

    assert "AUTHSVC_KEY_ENCRYPTION_KEYS_FILE" in str(caught.value)


def test_external_database_without_key_encryption_keys_is_rejected_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        _from_env(AUTHSVC_DATABASE_URL="postgresql://app@db.internal/auth")

    assert "AUTHSVC_KEY_ENCRYPTION_KEYS" in str(caught.value)


def test_serve_takes_the_flag_of_every_setting() -> None:
    # The supervisor passes its command line's flags on to `serve` workers.
    without_serve = [s.env for s in config_module.SETTINGS if "serve" not in s.group.commands]

    assert without_serve == []


def test_every_setting_is_in_a_documented_group() -> None:
    ungrouped = [s.env for s in config_module.SETTINGS if s.group not in config_module.GROUPS]

    assert ungrouped == []


def test_an_override_no_setting_has_is_refused() -> None:
    # A test overriding a renamed setting would otherwise run on the default, passing by
    # construction.
    with pytest.raises(ValueError, match="no setting is named revoked_retention"):
        config_module.from_env(environ={}, overrides={"revoked_retention": "1h"})
