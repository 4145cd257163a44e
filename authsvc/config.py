"""Configuration: one frozen Config, from AUTHSVC_* variables and --flags.

Every setting is an environment variable AUTHSVC_<NAME> with a matching
--<name> flag; the flag wins. This module is the only reader of os.environ.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "KEY_ENCRYPTION_KEYS_SETTINGS",
    "SETTINGS",
    "Config",
    "ConfigError",
    "KeyEncryptionKeys",
    "Secret",
    "Setting",
    "add_flags",
    "from_env",
    "parse_key_encryption_keys",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


class Secret(str):
    """A string that does not print itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> timedelta:
    """'15m', '7d', '10s', '250ms' or plain seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 12h or 7d")
    return timedelta(seconds=float(match["n"]) * _UNITS[match["unit"]])


def parse_positive_duration(text: str) -> timedelta:
    """A duration that must not be zero: a zero TTL, window or interval would switch the
    feature off (every token expired, a throttle that never counts, a busy sweep loop)."""
    duration = parse_duration(text)
    if duration <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return duration


# gRPC counts connection timings in milliseconds in a C int.
_GRPC_MAX_MILLISECONDS = 2**31 - 1


def parse_connection_duration(text: str) -> timedelta:
    """A positive duration gRPC can hold: at most 24 days, 20 hours (2**31 - 1 ms)."""
    duration = parse_positive_duration(text)
    if duration.total_seconds() * 1000 > _GRPC_MAX_MILLISECONDS:
        raise ValueError(f"{text!r} is longer than gRPC allows (24d)")
    return duration


def parse_connection_grace(text: str) -> timedelta:
    """Like parse_connection_duration, but zero is allowed."""
    return parse_connection_duration(text) if parse_duration(text) else timedelta(0)


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def parse_algorithm(text: str) -> str:
    if text not in ("EdDSA", "ES256"):
        raise ValueError(f"{text!r} is not EdDSA or ES256")
    return text


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive integer")
    return value


def parse_non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{value} is negative")
    return value


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"{text!r} is not DEBUG, INFO, WARNING or ERROR")
    return level


def parse_port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port")
    return value


_KEK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEK_BYTES = 32


@dataclass(frozen=True, slots=True)
class KeyEncryptionKeys:
    """Key-encryption keys as (id, 32-byte secret), the first the one that encrypts.

    Prints its ids only: they are names, and an operator needs them; the secrets never print.
    """

    keys: tuple[tuple[str, bytes], ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(kek_id for kek_id, _ in self.keys)

    def __repr__(self) -> str:
        return f"KeyEncryptionKeys(ids={list(self.ids)!r}, secrets='***')"


def parse_key_encryption_keys(text: str) -> KeyEncryptionKeys:
    """`id:base64-secret` entries, separated by commas or lines; the first encrypts."""
    keys: list[tuple[str, bytes]] = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        kek_id, sep, encoded = entry.partition(":")
        if not sep or _KEK_ID.fullmatch(kek_id) is None:
            raise ValueError(
                "each key is ID:BASE64 (an ID of letters, digits, '.', '_' or '-', then 32 "
                "random bytes in base64, e.g. from `openssl rand -base64 32`)"
            )
        try:
            secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_")
        except binascii.Error:
            secret = b""
        if len(secret) != KEK_BYTES:
            # The secret itself is not repeated: the message goes to logs.
            raise ValueError(f"key {kek_id!r} is not {KEK_BYTES} bytes of base64")
        if kek_id in (known for known, _ in keys):
            raise ValueError(f"key id {kek_id!r} appears twice")
        keys.append((kek_id, secret))
    if not keys:
        raise ValueError("no key given")
    return KeyEncryptionKeys(tuple(keys))


def _parse_key_encryption_keys_file(text: str) -> KeyEncryptionKeys:
    path = parse_readable_file(text)
    try:
        return parse_key_encryption_keys(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{text}: {exc}") from exc


def parse_readable_file(text: str) -> Path:
    """A file we can open now; its contents are checked where they are used."""
    path = Path(text)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {text!r}: {exc.strerror}") from exc
    return path


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    # How --help and the README state a default that depends on the machine.
    shown_default: str | None = None

    @property
    def env(self) -> str:
        return "AUTHSVC_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "0.0.0.0", "Address the gRPC server listens on."),  # noqa: S104
    Setting("port", parse_port, "50051", "gRPC port; 0 picks a free one."),
    Setting(
        "workers",
        parse_positive_int,
        # The CPUs this process may use (a cpuset or taskset), not all the host's.
        str(len(os.sched_getaffinity(0))),
        "Server processes `serve` runs on the one port; 1 runs no supervisor.",
        shown_default="number of usable CPUs",
    ),
    Setting(
        "tls_cert_file",
        parse_readable_file,
        None,
        "PEM certificate chain the server presents. Unset: plaintext.",
    ),
    Setting("tls_key_file", parse_readable_file, None, "PEM private key of that certificate."),
    Setting(
        "tls_client_ca_file",
        parse_readable_file,
        None,
        "PEM CA bundle; when set, clients must present a certificate it signed (mTLS).",
    ),
    Setting(
        "tls_client_cert_file",
        parse_readable_file,
        None,
        "PEM client certificate `authsvc healthcheck` presents to an mTLS server.",
    ),
    Setting(
        "tls_client_key_file", parse_readable_file, None, "PEM private key of that certificate."
    ),
    Setting(
        "database_url",
        Secret,
        None,
        "PostgreSQL URL (postgresql://user:pass@host:5432/db). Unset: run an embedded PostgreSQL.",
    ),
    Setting(
        "data_dir", Path, ".authsvc-data", "Directory of the embedded PostgreSQL's data (kept)."
    ),
    Setting(
        "key_encryption_keys",
        parse_key_encryption_keys,
        None,
        "Keys that encrypt the signing keys in the database, `ID:BASE64` (32 bytes), "
        "comma-separated; the first encrypts, all decrypt. Required with AUTHSVC_DATABASE_URL.",
        shown_default="embedded database: generated in the data directory",
    ),
    Setting(
        "key_encryption_keys_file",
        _parse_key_encryption_keys_file,
        None,
        "File holding the same, one per line (a mounted secret); instead of the variable.",
    ),
    Setting("db_pool_min_size", parse_non_negative_int, "1", "Connections the pool keeps open."),
    Setting("db_pool_max_size", parse_positive_int, "10", "Most connections the pool opens."),
    Setting(
        "db_connect_timeout",
        parse_positive_duration,
        "5s",
        "Give up connecting to PostgreSQL after.",
    ),
    Setting("db_statement_timeout", parse_positive_duration, "5s", "Give up on a query after."),
    Setting("issuer", str, "authsvc", "Access-token `iss` claim."),
    Setting("audience", str, "authsvc", "Access-token `aud` claim."),
    Setting(
        "signing_algorithm",
        parse_algorithm,
        "EdDSA",
        "EdDSA (Ed25519) or ES256, for keys created from now on.",
    ),
    Setting("access_token_ttl", parse_positive_duration, "15m", "Access-token lifetime."),
    # 30 s: far above NTP-kept drift, small beside a 15 min token (Spring Security takes 60 s).
    Setting(
        "clock_skew",
        parse_duration,
        "30s",
        "Leeway for access-token exp, nbf and iat; the clients' verifiers default to the same.",
    ),
    Setting(
        "key_reload_interval", parse_positive_duration, "60s", "How often replicas reload keys."
    ),
    Setting(
        "session_idle_timeout", parse_positive_duration, "7d", "Session ends without a refresh for."
    ),
    Setting("session_lifetime", parse_positive_duration, "7d", "Absolute session lifetime."),
    Setting(
        "remember_me_lifetime",
        parse_positive_duration,
        "30d",
        "Absolute lifetime with remember_me.",
    ),
    Setting("refresh_grace_period", parse_duration, "10s", "Rotated token still answers for."),
    Setting("registration_enabled", parse_bool, "true", "Whether Register creates accounts."),
    Setting(
        "registration_reveals_accounts",
        parse_bool,
        "false",
        "Register signs in and answers EMAIL_TAKEN, so it tells which emails have accounts.",
    ),
    Setting("password_min_length", parse_positive_int, "8", "Shortest password Register takes."),
    Setting("argon2_time_cost", parse_positive_int, "3", "argon2id passes."),
    Setting("argon2_memory_kib", parse_positive_int, "65536", "argon2id memory per hash, KiB."),
    Setting("argon2_parallelism", parse_positive_int, "4", "argon2id lanes."),
    Setting(
        "hash_workers",
        parse_positive_int,
        "2",
        "Threads checking passwords for Login (with sign_up_hash_workers, caps memory).",
    ),
    Setting(
        "sign_up_hash_workers",
        parse_positive_int,
        "1",
        "Threads hashing passwords for Register, apart from Login's: a sign-up flood "
        "cannot take them.",
    ),
    Setting(
        "hash_queue_limit",
        parse_non_negative_int,
        "8",
        "Password hashes each lane queues beyond its threads; more are refused at once "
        "(SERVER_BUSY) rather than run after their deadline.",
    ),
    Setting("trusted_proxies", parse_networks, "", "CIDRs whose x-forwarded-for is believed."),
    Setting("sweep_interval", parse_positive_duration, "60s", "Time between expiry sweeps."),
    Setting("sweep_batch_size", parse_positive_int, "1000", "Rows deleted per sweep statement."),
    Setting(
        "sweep_batch_pause",
        parse_duration,
        "100ms",
        "Pause between sweep batches, so a large backlog does not starve live commits.",
    ),
    Setting("revoked_retention", parse_duration, "7d", "Keep revoked sessions this long."),
    Setting("shutdown_grace", parse_duration, "10s", "In-flight RPCs get this long on stop."),
    Setting(
        "max_message_bytes", parse_positive_int, "65536", "Largest request accepted, in bytes."
    ),
    # Connections: each holds a file descriptor until it is closed (README: production).
    Setting(
        "connection_idle_timeout",
        parse_connection_duration,
        # Long enough that a client calling every few minutes keeps its connection.
        "5m",
        "Close a client connection that has had no call in flight for this long.",
    ),
    Setting(
        "connection_max_age",
        parse_connection_duration,
        # Clients reconnect by themselves; a fresh connection spreads over new replicas.
        # No longer than the idle timeout: a call left half-sent keeps a connection from
        # being idle, and only its age then closes it.
        "5m",
        "Ask a client to reconnect once its connection is this old (GOAWAY, +-10% jitter).",
    ),
    Setting(
        "connection_max_age_grace",
        parse_connection_grace,
        # A unary call here takes well under a second; a health Watch simply resumes.
        "10s",
        "Calls still running on a connection past its age get this long, then it is closed.",
    ),
    Setting(
        "keepalive_min_interval",
        parse_connection_duration,
        # Clients keeping NAT and load-balancer paths open ping every 30-60s, rarely faster.
        "30s",
        "Pings from a client closer together than this are strikes; 3 strikes close it.",
    ),
    Setting(
        "max_concurrent_streams",
        parse_positive_int,
        # Calls past it on one connection fail UNAVAILABLE (REFUSED_STREAM; gRPC clients do
        # not hold them back), so it sits well above a busy client's concurrency (300 in tests).
        "1000",
        "Calls one connection may run at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).",
    ),
    Setting(
        "login_failures_per_account_and_ip",
        parse_positive_int,
        "5",
        "Failed logins per account from one address per window.",
    ),
    Setting(
        "login_failures_per_account",
        parse_positive_int,
        "20",
        "Failed logins per account from addresses it never signed in from, per window; "
        "5 times as many in a day lock it for the day.",
    ),
    Setting(
        "login_failures_per_ip",
        parse_positive_int,
        "50",
        "Failed logins per address per window, across accounts not known there.",
    ),
    Setting(
        "login_failure_window",
        parse_positive_duration,
        "15m",
        "Window (and lockout) of the login limits.",
    ),
    Setting(
        "known_address_retention",
        parse_positive_duration,
        "90d",
        "A sign-in from an address exempts it from the account's and address's limits for.",
    ),
    Setting(
        "shared_addresses",
        parse_networks,
        "",
        "CIDRs many people share (office NAT, a backend calling Login): higher per-address limits.",
    ),
    Setting(
        "shared_address_factor",
        parse_positive_int,
        "20",
        "How many times higher the per-address limits of shared_addresses are.",
    ),
    Setting("sign_ups_per_ip", parse_positive_int, "10", "Register calls per address per window."),
    Setting(
        "sign_ups_total", parse_positive_int, "1000", "Register calls per window, all addresses."
    ),
    Setting("sign_up_window", parse_positive_duration, "1h", "Window of the Register limits."),
    Setting("audit_retention", parse_duration, "90d", "Keep audit events this long."),
    Setting("log_level", parse_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR."),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    host: str
    port: int
    workers: int
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_client_ca_file: Path | None
    tls_client_cert_file: Path | None
    tls_client_key_file: Path | None
    database_url: Secret | None
    data_dir: Path
    key_encryption_keys: KeyEncryptionKeys | None
    key_encryption_keys_file: KeyEncryptionKeys | None
    db_pool_min_size: int
    db_pool_max_size: int
    db_connect_timeout: timedelta
    db_statement_timeout: timedelta
    issuer: str
    audience: str
    signing_algorithm: str
    access_token_ttl: timedelta
    clock_skew: timedelta
    key_reload_interval: timedelta
    session_idle_timeout: timedelta
    session_lifetime: timedelta
    remember_me_lifetime: timedelta
    refresh_grace_period: timedelta
    registration_enabled: bool
    registration_reveals_accounts: bool
    password_min_length: int
    argon2_time_cost: int
    argon2_memory_kib: int
    argon2_parallelism: int
    hash_workers: int
    sign_up_hash_workers: int
    hash_queue_limit: int
    trusted_proxies: tuple[IpNetwork, ...]
    sweep_interval: timedelta
    sweep_batch_size: int
    sweep_batch_pause: timedelta
    revoked_retention: timedelta
    shutdown_grace: timedelta
    max_message_bytes: int
    connection_idle_timeout: timedelta
    connection_max_age: timedelta
    connection_max_age_grace: timedelta
    keepalive_min_interval: timedelta
    max_concurrent_streams: int
    login_failures_per_account_and_ip: int
    login_failures_per_account: int
    login_failures_per_ip: int
    login_failure_window: timedelta
    known_address_retention: timedelta
    shared_addresses: tuple[IpNetwork, ...]
    shared_address_factor: int
    sign_ups_per_ip: int
    sign_ups_total: int
    sign_up_window: timedelta
    audit_retention: timedelta
    log_level: str

    @property
    def configured_key_encryption_keys(self) -> KeyEncryptionKeys | None:
        """The key-encryption keys from the variable or its file, whichever is set."""
        return self.key_encryption_keys or self.key_encryption_keys_file


assert [s.name for s in SETTINGS] == [f.name for f in fields(Config)], "SETTINGS and Config differ"


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per setting; unset flags stay None so the environment applies."""
    group = parser.add_argument_group("configuration (flags override AUTHSVC_* variables)")
    for setting in SETTINGS:
        group.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            metavar=setting.name.upper(),
            help=f"{setting.help} [{setting.env}, default: {_shown_default(setting)}]",
        )


def _shown_default(setting: Setting) -> str:
    return setting.shown_default or setting.default or "unset"


def from_env(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> Config:
    """Build the Config; a bad value raises ConfigError naming its variable."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = overrides.get(setting.name)
        source = setting.flag
        if raw is None:
            raw = environ.get(setting.env) or None
            source = setting.env
        if raw is None:
            raw = setting.default
            source = f"{setting.env} (default)"
        if raw is None:
            values[setting.name] = None
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    config = Config(**values)
    _check_consistency(config)
    return config


KEY_ENCRYPTION_KEYS_SETTINGS = "AUTHSVC_KEY_ENCRYPTION_KEYS (or AUTHSVC_KEY_ENCRYPTION_KEYS_FILE)"


def _check_consistency(config: Config) -> None:
    has_keks = (config.key_encryption_keys, config.key_encryption_keys_file) != (None, None)
    problems: Sequence[tuple[bool, str]] = (
        (
            None not in (config.key_encryption_keys, config.key_encryption_keys_file),
            "set AUTHSVC_KEY_ENCRYPTION_KEYS or AUTHSVC_KEY_ENCRYPTION_KEYS_FILE, not both",
        ),
        (
            # Every replica must decrypt what any other stored: none may invent its own key.
            config.database_url is not None and not has_keks,
            f"{KEY_ENCRYPTION_KEYS_SETTINGS} must be set with AUTHSVC_DATABASE_URL: "
            "the signing keys in the database are encrypted under it, and every replica "
            "needs the same keys",
        ),
        (config.db_pool_max_size < 2, "AUTHSVC_DB_POOL_MAX_SIZE must be at least 2"),
        (
            config.db_pool_min_size > config.db_pool_max_size,
            "AUTHSVC_DB_POOL_MIN_SIZE must not exceed AUTHSVC_DB_POOL_MAX_SIZE",
        ),
        (
            config.session_idle_timeout <= timedelta(0),
            "AUTHSVC_SESSION_IDLE_TIMEOUT must be positive",
        ),
        (config.session_lifetime <= timedelta(0), "AUTHSVC_SESSION_LIFETIME must be positive"),
        (
            config.remember_me_lifetime < config.session_lifetime,
            "AUTHSVC_REMEMBER_ME_LIFETIME must be at least AUTHSVC_SESSION_LIFETIME",
        ),
        (config.access_token_ttl <= timedelta(0), "AUTHSVC_ACCESS_TOKEN_TTL must be positive"),
        (
            config.argon2_memory_kib < 8 * config.argon2_parallelism,
            "AUTHSVC_ARGON2_MEMORY_KIB must be at least 8 x AUTHSVC_ARGON2_PARALLELISM",
        ),
        (
            (config.tls_cert_file is None) != (config.tls_key_file is None),
            "AUTHSVC_TLS_CERT_FILE and AUTHSVC_TLS_KEY_FILE must be set together",
        ),
        (
            config.tls_client_ca_file is not None and config.tls_cert_file is None,
            "AUTHSVC_TLS_CLIENT_CA_FILE needs AUTHSVC_TLS_CERT_FILE and AUTHSVC_TLS_KEY_FILE",
        ),
        (
            (config.tls_client_cert_file is None) != (config.tls_client_key_file is None),
            "AUTHSVC_TLS_CLIENT_CERT_FILE and AUTHSVC_TLS_CLIENT_KEY_FILE must be set together",
        ),
        (
            config.tls_client_cert_file is not None and config.tls_cert_file is None,
            "AUTHSVC_TLS_CLIENT_CERT_FILE needs AUTHSVC_TLS_CERT_FILE (the server's certificate)",
        ),
    )
    for failed, message in problems:
        if failed:
            raise ConfigError(message)
