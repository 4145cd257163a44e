"""Configuration: one frozen Config, from AUTHSVC_* variables and --flags.

Each setting is declared once, as a field of `Config` with its parser, default, help text
and group; its environment variable (AUTHSVC_<NAME>), its --<name> flag, the commands that
take that flag and docs/configuration.md are all derived from that declaration. The flag
wins over the variable. This module is the only reader of os.environ.

`python -m authsvc.config --markdown > docs/configuration.md` regenerates the docs.
"""

# Config's fields are declared by calls to _setting, which returns dataclasses.field().
# ruff: noqa: RUF009

from __future__ import annotations

import argparse
import base64
import binascii
import difflib
import ipaddress
import logging
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from authsvc.core.factors import SecondFactorPolicy
from authsvc.core.pooler import DatabasePooler
from authsvc.core.session_limits import SessionLimitPolicy
from authsvc.service_keys import ServiceKeys, parse_service_keys
from authsvc.webhook_settings import (
    WebhookSecrets,
    parse_webhook_secrets,
    parse_webhook_secrets_file,
    parse_webhook_urls,
)

__all__ = [
    "AUDIT",
    "COMMANDS",
    "GROUPS",
    "HEALTHCHECK",
    "KEYS_REWRAP",
    "KEYS_ROTATE",
    "KEY_ENCRYPTION_KEYS_SETTINGS",
    "MIGRATE",
    "OPERATOR_KEY_FILE_VARIABLE",
    "OPERATOR_KEY_VARIABLE",
    "OTHER_VARIABLES",
    "SERVE",
    "SERVICE_KEY_CREATE",
    "SETTINGS",
    "SWEEP",
    "USERS_CREATE",
    "Config",
    "ConfigError",
    "Group",
    "KeyEncryptionKeys",
    "Secret",
    "Setting",
    "add_flags",
    "check_database",
    "from_env",
    "markdown",
    "parse_duration",
    "parse_key_encryption_keys",
    "unknown_variables",
    "warn_about_unknown_variables",
]

_log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

PREFIX = "AUTHSVC_"


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


class Secret(str):
    """A string that does not print itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


class _Invalid(ValueError):
    """A value that is not what the setting takes; from_env makes it a sentence
    "<VARIABLE> must be <expected>[, like <default>]; got '<text>'"."""

    def __init__(self, expected: str, got: str, *, like_default: bool = False) -> None:
        super().__init__(f"must be {expected}; got {got!r}")
        self.expected = expected
        self.got = got
        self.like_default = like_default


def _whole_number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _Invalid("a whole number", text, like_default=True) from None


_NUMBER = r"\d+(?:\.\d+)?"
# Largest unit first, each at most once: 1h30m, 2d12h, 1m30s, 250ms.
_DURATION = re.compile(
    "".join(f"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit in ("d", "h", "m", "s", "ms"))
)
_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_EXAMPLES = "a duration such as 250ms, 30s, 1h30m or 7d"


def parse_duration(text: str) -> timedelta:
    """'1h30m', '2d12h', '15m', '250ms' or plain seconds ('30', '1.5')."""
    stripped = text.strip()
    if re.fullmatch(_NUMBER, stripped):
        return timedelta(seconds=float(stripped))
    match = _DURATION.fullmatch(stripped)
    if match is None or not any(match.groupdict().values()):
        raise _Invalid(_DURATION_EXAMPLES, text)
    return timedelta(
        seconds=sum(float(n) * _SECONDS[unit] for unit, n in match.groupdict().items() if n)
    )


def parse_positive_duration(text: str) -> timedelta:
    """A duration that must not be zero: a zero TTL, window or interval would switch the
    feature off (every token expired, a throttle that never counts, a busy sweep loop)."""
    duration = parse_duration(text)
    if duration <= timedelta(0):
        raise _Invalid("longer than zero", text)
    return duration


# gRPC counts connection timings in milliseconds in a C int.
_GRPC_MAX_MILLISECONDS = 2**31 - 1


def parse_connection_duration(text: str) -> timedelta:
    """A positive duration gRPC can hold: at most 24 days, 20 hours (2**31 - 1 ms)."""
    duration = parse_positive_duration(text)
    if duration.total_seconds() * 1000 > _GRPC_MAX_MILLISECONDS:
        raise _Invalid("at most 24d, the longest gRPC can hold", text)
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
    raise _Invalid("true or false", text)


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise _Invalid("comma-separated networks such as 10.0.0.0/8, fd00::/8", text) from None


def parse_algorithm(text: str) -> str:
    if text not in ("EdDSA", "ES256"):
        raise _Invalid("EdDSA or ES256", text)
    return text


def parse_positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise _Invalid("at least 1", text)
    return value


def parse_non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise _Invalid("0 or more", text)
    return value


def parse_session_limit_policy(text: str) -> SessionLimitPolicy:
    try:
        return SessionLimitPolicy(text.strip())
    except ValueError:
        names = " or ".join(policy.value for policy in SessionLimitPolicy)
        raise _Invalid(names, text) from None


def parse_second_factor_policy(text: str) -> SecondFactorPolicy:
    try:
        return SecondFactorPolicy(text.strip())
    except ValueError:
        names = " or ".join(policy.value for policy in SecondFactorPolicy)
        raise _Invalid(names, text) from None


def parse_database_pooler(text: str) -> DatabasePooler:
    try:
        return DatabasePooler(text.strip())
    except ValueError:
        names = " or ".join(pooler.value for pooler in DatabasePooler)
        raise _Invalid(names, text) from None


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise _Invalid("DEBUG, INFO, WARNING or ERROR", text)
    return level


def parse_public_url(text: str) -> str:
    """An absolute http(s) URL with a host, no query or fragment; without a trailing slash,
    so paths can be appended."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise _Invalid("an http(s) URL such as https://auth.example.com", text)
    return parts.geturl().rstrip("/")


def parse_port(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= 65535:
        raise _Invalid("a TCP port, 0 to 65535", text)
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


def parse_names(text: str) -> tuple[str, ...]:
    """Comma-separated names, such as spiffe://example.org/billing, billing.internal."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if any(re.search(r"\s", name) for name in names):
        raise _Invalid("comma-separated names without spaces inside them", text)
    return names


def parse_rp_id(text: str) -> str:
    """A WebAuthn relying party id: a bare host name, as the browser's origin has it."""
    host = text.strip().lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", host) or ".." in host:
        raise _Invalid("a host name such as example.com (no scheme, port or path)", text)
    return host


def parse_origins(text: str) -> tuple[str, ...]:
    """Comma-separated web origins, `scheme://host[:port]` each, as browsers send them."""
    origins = []
    for part in (p.strip().rstrip("/") for p in text.split(",")):
        if not part:
            continue
        parts = urllib.parse.urlsplit(part)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
        ):
            raise _Invalid("origins such as https://example.com, comma-separated", text)
        origins.append(part)
    return tuple(origins)


def _usable_cpus() -> int:
    """The CPUs this process may use (a cpuset or taskset), not all the host's; where the
    system cannot say (macOS has no sched_getaffinity), all of them."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1


# The commands, as `authsvc <command> --help` names them.
SERVE = "serve"
MIGRATE = "migrate"
SWEEP = "sweep"
KEYS_ROTATE = "keys rotate"
KEYS_REWRAP = "keys rewrap"
USERS_CREATE = "users create"
AUDIT = "audit"
HEALTHCHECK = "healthcheck"
SERVICE_KEY_CREATE = "service-key create"
COMMANDS = (
    SERVE,
    MIGRATE,
    SWEEP,
    KEYS_ROTATE,
    KEYS_REWRAP,
    USERS_CREATE,
    AUDIT,
    HEALTHCHECK,
    SERVICE_KEY_CREATE,
)
_CONNECTING = (SERVE, MIGRATE, SWEEP, KEYS_ROTATE, KEYS_REWRAP, USERS_CREATE, AUDIT)


@dataclass(frozen=True, slots=True)
class Group:
    """Settings that belong together; their flags are on `commands` (every setting's
    variable is read by every command)."""

    title: str
    commands: tuple[str, ...]


LISTENING = Group("Listening", (SERVE, HEALTHCHECK))
HTTP = Group("HTTP: JWKS and OpenID discovery for gateways", (SERVE,))
TLS = Group("TLS", (SERVE, HEALTHCHECK))
DATABASE = Group("Database", _CONNECTING)
SERVER = Group("Server processes and connections", (SERVE,))
TOKENS = Group("Access tokens and signing keys", (SERVE, KEYS_ROTATE))
# The sweeper deletes by these lifetimes and windows, so `sweep` takes them too.
SESSIONS = Group("Sessions and registration", (SERVE, SWEEP))
GEOLOCATION = Group("Session geolocation", (SERVE,))
SECOND_FACTORS = Group("Second factors and step-up", (SERVE,))
PASSWORDS = Group("Passwords", (SERVE, USERS_CREATE))
LIMITS = Group("Login and sign-up limits", (SERVE, SWEEP))
SWEEPER = Group("Sweeper and retention", (SERVE, SWEEP))
SERVICES = Group("Service credentials", (SERVE,))
FEED = Group("Revocation feed", (SERVE,))
WEBHOOKS = Group("Webhooks: session events to HTTP", (SERVE,))
METRICS = Group("Metrics", (SERVE,))
TRACING = Group("Tracing", (SERVE,))
PASSKEYS = Group("Passkeys (WebAuthn)", (SERVE,))
LOGGING = Group("Logging", COMMANDS)
GROUPS = (
    LISTENING,
    HTTP,
    TLS,
    DATABASE,
    SERVER,
    TOKENS,
    SESSIONS,
    GEOLOCATION,
    SECOND_FACTORS,
    PASSWORDS,
    LIMITS,
    SWEEPER,
    SERVICES,
    FEED,
    WEBHOOKS,
    METRICS,
    TRACING,
    PASSKEYS,
    LOGGING,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One setting, as declared on its Config field."""

    name: str
    parse: Callable[[str], Any]
    default: str | None
    help: str
    group: Group
    # How --help and the docs state a default that depends on the machine.
    shown_default: str | None = None
    # Its value is never printed (repr '***'); the docs say so.
    secret: bool = False

    @property
    def env(self) -> str:
        return PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_SETTING = "authsvc.setting"


def _setting(
    parse: Callable[[str], T],
    default: str | None,
    help: str,
    group: Group,
    *,
    shown_default: str | None = None,
    secret: bool = False,
) -> T:
    """A Config field's declaration. Typed as the parser's result, so mypy checks the
    parser against the field's annotation; at run time it is the dataclass field."""
    declared = Setting(
        name="",
        parse=parse,
        default=default,
        help=help,
        group=group,
        shown_default=shown_default,
        secret=secret,
    )
    return cast(T, field(metadata={_SETTING: declared}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every setting, parsed. Each field is the one declaration of its setting."""

    host: str = _setting(
        str,
        "0.0.0.0",  # noqa: S104
        "Address the gRPC server listens on.",
        LISTENING,
    )
    port: int = _setting(parse_port, "50051", "gRPC port; 0 picks a free one.", LISTENING)
    http_port: int | None = _setting(
        parse_port,
        None,
        "Port serving /.well-known/jwks.json and /.well-known/openid-configuration (HTTPS "
        "when the gRPC port has TLS); 0 picks a free one. Unset: no HTTP port.",
        HTTP,
    )
    http_host: str | None = _setting(
        str, None, "Address the HTTP port listens on.", HTTP, shown_default="AUTHSVC_HOST"
    )
    http_public_url: str | None = _setting(
        parse_public_url,
        None,
        "URL gateways reach the HTTP port at (`https://auth.example.com`); the discovery "
        "document's `jwks_uri` is this plus `/.well-known/jwks.json`.",
        HTTP,
        shown_default="AUTHSVC_ISSUER if it is an http(s) URL, else each request's own",
    )
    http_read_timeout: timedelta = _setting(
        parse_positive_duration,
        # A gateway sends its request at once; a client that trickles one ties a descriptor.
        "10s",
        "Close an HTTP connection that has not sent a whole request this long after it "
        "connected or got its last answer.",
        HTTP,
    )
    tls_cert_file: Path | None = _setting(
        parse_readable_file,
        None,
        "PEM certificate chain the server presents. Unset: plaintext.",
        TLS,
    )
    tls_key_file: Path | None = _setting(
        parse_readable_file, None, "PEM private key of that certificate.", TLS
    )
    tls_client_ca_file: Path | None = _setting(
        parse_readable_file,
        None,
        "PEM CA bundle; when set, clients must present a certificate it signed (mTLS).",
        TLS,
    )
    tls_client_cert_file: Path | None = _setting(
        parse_readable_file,
        None,
        "PEM client certificate `authsvc healthcheck` presents to an mTLS server.",
        TLS,
    )
    tls_client_key_file: Path | None = _setting(
        parse_readable_file, None, "PEM private key of that certificate.", TLS
    )
    database_url: Secret | None = _setting(
        Secret,
        None,
        "PostgreSQL URL (`postgresql://user:pass@host:5432/db`). "
        "Unset: run an embedded PostgreSQL.",
        DATABASE,
        secret=True,
    )
    data_dir: Path = _setting(
        Path, ".authsvc-data", "Directory of the embedded PostgreSQL's data (kept).", DATABASE
    )
    # Explicit rather than sniffed: a developer's container (a devcontainer, CI) may run the
    # embedded database on purpose, and /.dockerenv says nothing about intent.
    embedded_database: bool = _setting(
        parse_bool,
        "true",
        "Whether a command may start an embedded PostgreSQL when `AUTHSVC_DATABASE_URL` is "
        "unset. The container image sets `false`: a database inside a container dies with it.",
        DATABASE,
    )
    key_encryption_keys: KeyEncryptionKeys | None = _setting(
        parse_key_encryption_keys,
        None,
        "Keys that encrypt the signing keys in the database, `ID:BASE64` (32 bytes), "
        "comma-separated; the first encrypts, all decrypt. Required with "
        "`AUTHSVC_DATABASE_URL`.",
        DATABASE,
        shown_default="embedded database: generated in the data directory",
        secret=True,
    )
    key_encryption_keys_file: KeyEncryptionKeys | None = _setting(
        _parse_key_encryption_keys_file,
        None,
        "File holding the same, one per line (a mounted secret); instead of the variable.",
        DATABASE,
    )
    database_pooler: DatabasePooler = _setting(
        parse_database_pooler,
        "none",
        "What `AUTHSVC_DATABASE_URL` goes through: none, or pgbouncer-transaction (PgBouncer "
        "with pool_mode=transaction: no prepared-statement cache, no startup parameters, "
        "session-level locks on `AUTHSVC_LISTEN_DATABASE_URL`; docs/operations.md, Behind "
        "PgBouncer).",
        DATABASE,
    )
    listen_database_url: Secret | None = _setting(
        Secret,
        None,
        "PostgreSQL URL that reaches PostgreSQL directly, not through a transaction-pooling "
        "proxy: each server process's one revocation-feed connection, which LISTENs, and "
        "behind PgBouncer the few connections that hold session-level advisory locks "
        "(migrations, the sweep). Unset: `AUTHSVC_DATABASE_URL`'s.",
        DATABASE,
        secret=True,
    )
    db_pool_min_size: int = _setting(
        parse_non_negative_int, "1", "Connections the pool keeps open.", DATABASE
    )
    db_pool_max_size: int = _setting(
        parse_positive_int, "10", "Most connections the pool opens.", DATABASE
    )
    db_connect_timeout: timedelta = _setting(
        parse_positive_duration, "5s", "Give up connecting to PostgreSQL after.", DATABASE
    )
    db_statement_timeout: timedelta = _setting(
        parse_positive_duration, "5s", "Give up on a query after.", DATABASE
    )
    workers: int = _setting(
        parse_positive_int,
        str(_usable_cpus()),
        "Server processes `serve` runs on the one port; 1 runs no supervisor.",
        SERVER,
        shown_default="number of usable CPUs",
    )
    max_message_bytes: int = _setting(
        parse_positive_int, "65536", "Largest request accepted, in bytes.", SERVER
    )
    shutdown_grace: timedelta = _setting(
        parse_duration, "10s", "In-flight RPCs get this long on stop.", SERVER
    )
    trusted_proxies: tuple[IpNetwork, ...] = _setting(
        parse_networks, "", "CIDRs whose x-forwarded-for is believed.", SERVER
    )
    # Connections: each holds a file descriptor until it is closed (docs/operations.md).
    connection_idle_timeout: timedelta = _setting(
        parse_connection_duration,
        # Long enough that a client calling every few minutes keeps its connection.
        "5m",
        "Close a client connection that has had no call in flight for this long.",
        SERVER,
    )
    connection_max_age: timedelta = _setting(
        parse_connection_duration,
        # Clients reconnect by themselves; a fresh connection spreads over new replicas.
        # No longer than the idle timeout: a call left half-sent keeps a connection from
        # being idle, and only its age then closes it.
        "5m",
        "Ask a client to reconnect once its connection is this old (GOAWAY, +-10% jitter).",
        SERVER,
    )
    connection_max_age_grace: timedelta = _setting(
        parse_connection_grace,
        # A unary call here takes well under a second; a health Watch simply resumes.
        "10s",
        "Calls still running on a connection past its age get this long, then it is closed.",
        SERVER,
    )
    keepalive_min_interval: timedelta = _setting(
        parse_connection_duration,
        # Clients keeping NAT and load-balancer paths open ping every 30-60s, rarely faster.
        "30s",
        "Pings from a client closer together than this are strikes; 3 strikes close it.",
        SERVER,
    )
    revocation_feed_staleness: timedelta = _setting(
        parse_positive_duration,
        # Polled every quarter of it; a stale process checks sessions in the database.
        "3s",
        "A process that has not heard from its revocation feed for this long checks "
        "sessions in the database instead of its cache.",
        SERVER,
    )
    max_concurrent_streams: int = _setting(
        parse_positive_int,
        # Calls past it on one connection fail UNAVAILABLE (REFUSED_STREAM; gRPC clients do
        # not hold them back), so it sits well above a busy client's concurrency (300 in tests).
        "1000",
        "Calls one connection may run at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).",
        SERVER,
    )
    issuer: str = _setting(str, "authsvc", "Access-token `iss` claim.", TOKENS)
    audience: str = _setting(str, "authsvc", "Access-token `aud` claim.", TOKENS)
    signing_algorithm: str = _setting(
        parse_algorithm,
        "EdDSA",
        "EdDSA (Ed25519) or ES256, for keys created from now on.",
        TOKENS,
    )
    access_token_ttl: timedelta = _setting(
        parse_positive_duration, "15m", "Access-token lifetime.", TOKENS
    )
    # 30 s: far above NTP-kept drift, small beside a 15 min token (Spring Security takes 60 s).
    clock_skew: timedelta = _setting(
        parse_duration,
        "30s",
        "Leeway for access-token exp, nbf and iat; the clients' verifiers default to the same.",
        TOKENS,
    )
    key_reload_interval: timedelta = _setting(
        parse_positive_duration, "60s", "How often replicas reload keys.", TOKENS
    )
    signing_key_rotation_period: timedelta = _setting(
        parse_positive_duration,
        "90d",
        "How often you mean to rotate the signing key (`authsvc keys rotate`); exported as "
        "`authsvc_signing_key_rotation_period_seconds` for the key-age alert. Rotates nothing.",
        TOKENS,
    )
    session_idle_timeout: timedelta = _setting(
        parse_positive_duration, "7d", "Session ends without a refresh for.", SESSIONS
    )
    session_lifetime: timedelta = _setting(
        parse_positive_duration, "7d", "Absolute session lifetime.", SESSIONS
    )
    remember_me_lifetime: timedelta = _setting(
        parse_positive_duration, "30d", "Absolute lifetime with remember_me.", SESSIONS
    )
    refresh_grace_period: timedelta = _setting(
        parse_duration, "10s", "Rotated token still answers for.", SESSIONS
    )
    refresh_lineage: bool = _setting(
        parse_bool,
        "true",
        "Record every presentation of a refresh token, with the caller's address and user "
        "agent, for AdminService.GetSessionLineage (docs/operations.md, Refresh lineage). "
        "Off: nothing is recorded (nor any address).",
        SESSIONS,
    )
    registration_enabled: bool = _setting(
        parse_bool, "true", "Whether Register creates accounts.", SESSIONS
    )
    registration_reveals_accounts: bool = _setting(
        parse_bool,
        "false",
        "Register signs in and answers EMAIL_TAKEN, so it tells which emails have accounts.",
        SESSIONS,
    )
    session_limit: int = _setting(
        parse_non_negative_int,
        "0",
        "Most live sessions one user may have; 0: no limit, 1: single-session mode "
        "(docs/operations.md, Session limits).",
        SESSIONS,
    )
    session_limit_policy: SessionLimitPolicy = _setting(
        parse_session_limit_policy,
        "evict_oldest",
        "A login past AUTHSVC_SESSION_LIMIT: evict_oldest ends the user's least recently "
        "active session, refuse answers SESSION_LIMIT_REACHED.",
        SESSIONS,
    )
    second_factor_policy: SecondFactorPolicy = _setting(
        parse_second_factor_policy,
        "marked",
        "Who must have a second factor: marked, the accounts an operator marks "
        "(AdminService.SetSecondFactorRequired); all, every account. Such an account is sent "
        "to enrolment after a password login and gets no session until it enrols.",
        SECOND_FACTORS,
    )
    step_up_window: timedelta = _setting(
        parse_positive_duration,
        "10m",
        "How recent a second factor must be for a sensitive RPC (ChangePassword, Logout of "
        "other or all sessions, factor changes); older: STEP_UP_REQUIRED.",
        SECOND_FACTORS,
    )
    pending_login_lifetime: timedelta = _setting(
        parse_positive_duration,
        "5m",
        "How long a login whose password was right waits for its second factor.",
        SECOND_FACTORS,
    )
    totp_issuer: str = _setting(
        str,
        "authsvc",
        "The issuer TOTP apps show beside the account (the otpauth:// URI's issuer).",
        SECOND_FACTORS,
    )
    geoip_database: Path | None = _setting(
        parse_readable_file,
        None,
        "MaxMind City or Country database (`GeoLite2-City.mmdb`): sessions record the country "
        "and city of the login address (docs/operations.md, GeoIP). Unset: no location.",
        GEOLOCATION,
    )
    password_min_length: int = _setting(
        parse_positive_int, "8", "Shortest password Register takes.", PASSWORDS
    )
    argon2_time_cost: int = _setting(parse_positive_int, "3", "argon2id passes.", PASSWORDS)
    argon2_memory_kib: int = _setting(
        parse_positive_int, "65536", "argon2id memory per hash, KiB.", PASSWORDS
    )
    argon2_parallelism: int = _setting(parse_positive_int, "4", "argon2id lanes.", PASSWORDS)
    hash_workers: int = _setting(
        parse_positive_int,
        "2",
        "Threads checking passwords for Login (with sign_up_hash_workers, caps memory).",
        PASSWORDS,
    )
    sign_up_hash_workers: int = _setting(
        parse_positive_int,
        "1",
        "Threads hashing passwords for Register, apart from Login's: a sign-up flood "
        "cannot take them.",
        PASSWORDS,
    )
    hash_queue_limit: int = _setting(
        parse_non_negative_int,
        "8",
        "Password hashes each lane queues beyond its threads; more are refused at once "
        "(SERVER_BUSY) rather than run after their deadline.",
        PASSWORDS,
    )
    password_reset_ttl: timedelta = _setting(
        parse_positive_duration,
        "1h",
        "How long a password-reset token (AdminService.CreatePasswordResetToken) stays good.",
        PASSWORDS,
    )
    login_failures_per_account_and_ip: int = _setting(
        parse_positive_int, "5", "Failed logins per account from one address per window.", LIMITS
    )
    login_failures_per_account: int = _setting(
        parse_positive_int,
        "20",
        "Failed logins per account from addresses it never signed in from, per window; "
        "5 times as many in a day lock it for the day.",
        LIMITS,
    )
    login_failures_per_ip: int = _setting(
        parse_positive_int,
        "50",
        "Failed logins per address per window, across accounts not known there.",
        LIMITS,
    )
    login_failure_window: timedelta = _setting(
        parse_positive_duration, "15m", "Window (and lockout) of the login limits.", LIMITS
    )
    known_address_retention: timedelta = _setting(
        parse_positive_duration,
        "90d",
        "A sign-in from an address exempts it from the account's and address's limits for.",
        LIMITS,
    )
    shared_addresses: tuple[IpNetwork, ...] = _setting(
        parse_networks,
        "",
        "CIDRs many people share (office NAT, a backend calling Login): higher per-address limits.",
        LIMITS,
    )
    shared_address_factor: int = _setting(
        parse_positive_int,
        "20",
        "How many times higher the per-address limits of shared_addresses are.",
        LIMITS,
    )
    sign_ups_per_ip: int = _setting(
        parse_positive_int, "10", "Register calls per address per window.", LIMITS
    )
    sign_ups_total: int = _setting(
        parse_positive_int, "1000", "Register calls per window, all addresses.", LIMITS
    )
    sign_up_window: timedelta = _setting(
        parse_positive_duration, "1h", "Window of the Register limits.", LIMITS
    )
    sweep_interval: timedelta = _setting(
        parse_positive_duration, "60s", "Time between expiry sweeps.", SWEEPER
    )
    sweep_batch_size: int = _setting(
        parse_positive_int, "1000", "Rows deleted per sweep statement.", SWEEPER
    )
    sweep_batch_pause: timedelta = _setting(
        parse_duration,
        "100ms",
        "Pause between sweep batches, so a large backlog does not starve live commits.",
        SWEEPER,
    )
    ended_session_retention: timedelta = _setting(
        parse_duration,
        "30d",
        "Keep ended sessions this long after they end (tombstones: when, why and by whom, "
        "for GetSession and the refusals' end reasons); then the sweeper deletes them with "
        "their refresh tokens.",
        SWEEPER,
    )
    revocation_retention: timedelta = _setting(
        parse_duration,
        "1h",
        "Keep revocation-log entries this long (never less than the access-token TTL plus "
        "the clock skew); a feed subscriber away for longer starts from a snapshot.",
        SWEEPER,
    )
    audit_retention: timedelta = _setting(
        parse_duration, "90d", "Keep audit events this long.", SWEEPER
    )
    webhook_delivery_retention: timedelta = _setting(
        parse_duration,
        "7d",
        "Keep webhook deliveries this long after their last attempt, delivered or failed.",
        SWEEPER,
    )
    webhook_urls: tuple[str, ...] = _setting(
        parse_webhook_urls,
        "",
        "HTTP(S) endpoints that receive session events (created, refreshed after idle, "
        "ended), comma-separated; each gets every event. Empty: no events are written.",
        WEBHOOKS,
    )
    webhook_secret: WebhookSecrets | None = _setting(
        parse_webhook_secrets,
        None,
        "Secret(s) that sign each delivery, Standard Webhooks' `whsec_<base64>`, comma-"
        "separated: every one signs, so receivers can move to a new one without a gap. "
        "Needed with AUTHSVC_WEBHOOK_URLS.",
        WEBHOOKS,
        secret=True,
    )
    webhook_secret_file: WebhookSecrets | None = _setting(
        parse_webhook_secrets_file,
        None,
        "A file holding AUTHSVC_WEBHOOK_SECRET's value, instead of it.",
        WEBHOOKS,
    )
    webhook_idle_threshold: timedelta = _setting(
        parse_positive_duration,
        "24h",
        "A Refresh of a session idle at least this long sends session.refreshed_after_idle.",
        WEBHOOKS,
    )
    webhook_timeout: timedelta = _setting(
        parse_positive_duration,
        "5s",
        "How long one delivery attempt waits for the endpoint's answer.",
        WEBHOOKS,
    )
    webhook_concurrency: int = _setting(
        parse_positive_int,
        "8",
        "Deliveries each process claims and posts at once.",
        WEBHOOKS,
    )
    webhook_poll_interval: timedelta = _setting(
        parse_positive_duration,
        "1s",
        "How often an idle process looks for due deliveries.",
        WEBHOOKS,
    )
    # Hashes only (the keys have 256 bits of entropy): the entries may sit in a ConfigMap.
    service_keys: ServiceKeys = _setting(
        parse_service_keys,
        "",
        "Service keys accepted as `authorization: Bearer <key>`: `NAME:sha256:HEX` entries "
        "that `authsvc service-key create NAME` prints, comma-separated; two with one name "
        "let a key be rotated without downtime.",
        SERVICES,
    )
    service_identities: tuple[str, ...] = _setting(
        parse_names,
        "",
        "Client-certificate identities admitted as services on mutual TLS: URI SANs (SPIFFE "
        "IDs) or DNS SANs, comma-separated. Needs AUTHSVC_TLS_CLIENT_CA_FILE.",
        SERVICES,
    )
    operators: tuple[str, ...] = _setting(
        parse_names,
        "",
        "Names of service keys (AUTHSVC_SERVICE_KEYS) and client-certificate identities "
        "(AUTHSVC_SERVICE_IDENTITIES) that may call AdminService, comma-separated. Empty: "
        "nobody may.",
        SERVICES,
    )
    require_service_credentials: bool = _setting(
        parse_bool,
        "false",
        "ValidateToken and GetJwks answer only callers with service credentials, as "
        "WatchRevocations always does.",
        SERVICES,
    )
    revocation_heartbeat_interval: timedelta = _setting(
        parse_positive_duration,
        "1s",
        "WatchRevocations sends a heartbeat when a stream has been quiet this long, while "
        "this process's feed is current.",
        FEED,
    )
    # 10 pages of the feed's reads (1000 each): one burst of revocations cuts off no one.
    revocation_subscriber_buffer: int = _setting(
        parse_positive_int,
        "10000",
        "Revocations a WatchRevocations subscriber may fall behind before it is cut off "
        "(SUBSCRIBER_TOO_SLOW); one ring shared by a process's subscribers. Below 1000 "
        "(one read of the feed) a burst may cut off subscribers that keep up.",
        FEED,
    )
    revocation_max_subscribers: int = _setting(
        parse_positive_int,
        "1000",
        "WatchRevocations streams one process serves at once; more are refused (SERVER_BUSY).",
        FEED,
    )
    metrics: bool = _setting(
        parse_bool,
        "false",
        "Serve Prometheus metrics at /metrics on the HTTP port (AUTHSVC_HTTP_PORT must be set).",
        METRICS,
    )
    metrics_sample_interval: timedelta = _setting(
        parse_positive_duration,
        "30s",
        "How often one process counts the live sessions and their users (one query).",
        METRICS,
    )
    metrics_dir: Path | None = _setting(
        Path,
        None,
        "Directory where the processes of `serve --workers` keep their metrics, for any of "
        "them to answer a scrape for all; emptied at start. Unset: a private temporary "
        "directory, removed at exit.",
        METRICS,
    )
    otlp_endpoint: str | None = _setting(
        parse_public_url,
        None,
        "OpenTelemetry collector to send traces to over OTLP/gRPC, such as "
        "http://otel-collector:4317 (https:// for TLS). Unset: no tracing. The SDK's OTEL_* "
        "variables (OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...) apply.",
        TRACING,
    )
    log_level: str = _setting(parse_log_level, "INFO", "DEBUG, INFO, WARNING or ERROR.", LOGGING)
    # Passkeys (docs/second-factors.md, "Passkeys"). The relying party is the site the
    # passkeys belong to: a browser lets a page use them only on that host or below it.
    webauthn_rp_id: str | None = _setting(
        parse_rp_id,
        None,
        "WebAuthn relying party id: the host name passkeys are bound to (`example.com`, "
        "covering its subdomains). Unset: passkeys are off (PASSKEYS_DISABLED).",
        PASSKEYS,
    )
    webauthn_rp_name: str = _setting(
        str, "authsvc", "The name browsers show for the relying party.", PASSKEYS
    )
    webauthn_origins: tuple[str, ...] = _setting(
        parse_origins,
        "",
        "Origins whose pages may create and use passkeys (`https://app.example.com`), "
        "comma-separated; a ceremony from any other is refused.",
        PASSKEYS,
        shown_default="https://<AUTHSVC_WEBAUTHN_RP_ID>",
    )

    @property
    def webauthn_expected_origins(self) -> tuple[str, ...]:
        """The origins passkey ceremonies must come from: the setting, else the RP's host."""
        if self.webauthn_origins or self.webauthn_rp_id is None:
            return self.webauthn_origins
        return (f"https://{self.webauthn_rp_id}",)

    @property
    def revocation_window(self) -> timedelta:
        """How long after a session ends one of its access tokens may still be accepted:
        tokens live `access_token_ttl`, accepted `clock_skew` past their `exp`."""
        return self.access_token_ttl + self.clock_skew

    @property
    def effective_revocation_retention(self) -> timedelta:
        return max(self.revocation_retention, self.revocation_window)

    @property
    def http_listen_host(self) -> str:
        """The HTTP port's address: its own setting, else the gRPC port's."""
        return self.host if self.http_host is None else self.http_host

    @property
    def webhook_secrets(self) -> WebhookSecrets | None:
        """The webhook secrets from the variable or its file, whichever is set."""
        return self.webhook_secret or self.webhook_secret_file

    @property
    def configured_key_encryption_keys(self) -> KeyEncryptionKeys | None:
        """The key-encryption keys from the variable or its file, whichever is set."""
        return self.key_encryption_keys or self.key_encryption_keys_file


SETTINGS: tuple[Setting, ...] = tuple(
    replace(declared.metadata[_SETTING], name=declared.name) for declared in fields(Config)
)

# `authsvc admin`'s credential: not settings, so that no flag (which `ps` would show)
# ever carries the key.
OPERATOR_KEY_VARIABLE = "AUTHSVC_OPERATOR_KEY"
OPERATOR_KEY_FILE_VARIABLE = "AUTHSVC_OPERATOR_KEY_FILE"

# AUTHSVC_* variables that are not settings but are read on purpose by something else.
OTHER_VARIABLES: Mapping[str, str] = {
    OPERATOR_KEY_VARIABLE: "authsvc admin: the operator's service key",
    OPERATOR_KEY_FILE_VARIABLE: "authsvc admin: a file holding the operator's service key",
    "AUTHSVC_TEST_DATABASE_URL": "tests/conftest.py: the PostgreSQL the tests use",
    "AUTHSVC_URL": "clients/node README example: the server's address",
    "AUTHSVC_ADDR": "examples: the server's address",
    "AUTHSVC_BIN": "clients/node tests: the authsvc executable",
}


# Settings whose variable was renamed: the warning names the new one, not the closest spelling
# (AUTHSVC_REVOKED_RETENTION is nearest to AUTHSVC_REVOCATION_RETENTION, another setting).
RENAMED_VARIABLES: Mapping[str, str] = {
    "AUTHSVC_REVOKED_RETENTION": "AUTHSVC_ENDED_SESSION_RETENTION",
}


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """AUTHSVC_* variables nothing reads, each with the closest setting's variable (or None).
    A typo such as AUTHSVC_ACESS_TOKEN_TTL would otherwise be silently ignored."""
    environ = os.environ if environ is None else environ
    settings = [setting.env for setting in SETTINGS]
    known = {*settings, *OTHER_VARIABLES}
    return [
        (
            name,
            RENAMED_VARIABLES.get(name)
            or next(iter(difflib.get_close_matches(name, settings, n=1)), None),
        )
        for name in sorted(environ)
        if name.startswith(PREFIX) and name not in known
    ]


def warn_about_unknown_variables(environ: Mapping[str, str] | None = None) -> None:
    """One WARNING per unknown AUTHSVC_* variable (its name only: never its value)."""
    for name, closest in unknown_variables(environ):
        hint = f"; did you mean {closest}?" if closest else ""
        _log.warning(
            f"{name} is not a setting and is ignored{hint}",
            extra={"event": "unknown_setting", "variable": name, "did_you_mean": closest},
        )


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the --flag of each setting `command` takes; unset flags stay None so the
    environment applies."""
    for group in GROUPS:
        if command not in group.commands:
            continue
        flags = parser.add_argument_group(f"{group.title.lower()} (flags override AUTHSVC_*)")
        for setting in SETTINGS:
            if setting.group is group:
                shown = f"{setting.help} [{setting.env}, default: {_shown_default(setting)}]"
                flags.add_argument(
                    setting.flag,
                    dest=setting.name,
                    default=None,
                    metavar=setting.name.upper(),
                    help=shown.replace("%", "%%"),  # argparse %-formats help ("+-10% jitter")
                )


def _shown_default(setting: Setting) -> str:
    return setting.shown_default or setting.default or "unset"


def from_env(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str | None] | None = None,
) -> Config:
    """Build the Config; a bad value raises ConfigError naming its variable. `overrides` are
    by setting name (the flags' values); a name no setting has is a caller's bug, refused
    with ValueError so that a renamed setting cannot leave an override silently unused."""
    environ = os.environ if environ is None else environ
    overrides = overrides or {}
    if unknown := sorted(set(overrides) - {setting.name for setting in SETTINGS}):
        raise ValueError(f"no setting is named {', '.join(unknown)}")
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
        except _Invalid as exc:
            like = f", like {setting.default}" if exc.like_default and _example(setting) else ""
            raise ConfigError(f"{source} must be {exc.expected}{like}; got {exc.got!r}") from None
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    config = Config(**values)
    _check_consistency(config)
    return config


def _example(setting: Setting) -> bool:
    return bool(setting.default) and setting.shown_default is None


_DOCS_HEADER = """\
# Configuration

<!-- Generated from the declarations in authsvc/config.py: do not edit. Regenerate with
     .venv/bin/python -m authsvc.config --markdown > docs/configuration.md -->

Every setting is an environment variable `AUTHSVC_<NAME>`, read by every command, and a
`--<name>` flag on the commands its section names; the flag wins. Durations take `250ms`,
`30s`, `15m`, `1h30m`, `7d` or plain seconds. A bad value stops the process with a sentence
naming the variable. An `AUTHSVC_*` variable that is not a setting is reported at start with
the closest setting's name.
"""


def markdown() -> str:
    """docs/configuration.md: every setting, by group."""
    lines = [_DOCS_HEADER]
    for group in GROUPS:
        commands = ", ".join(f"`{command}`" for command in group.commands)
        lines += [
            f"## {group.title}",
            "",
            f"Flags on: {commands}.",
            "",
            "| Variable | Flag | Default | Meaning |",
            "|---|---|---|---|",
        ]
        for setting in SETTINGS:
            if setting.group is group:
                if setting.shown_default:
                    default = f"*({setting.shown_default})*"
                else:
                    default = f"`{setting.default}`" if setting.default else "*(unset)*"
                meaning = setting.help + (" Secret: never printed." if setting.secret else "")
                lines.append(f"| `{setting.env}` | `{setting.flag}` | {default} | {meaning} |")
        lines.append("")
    return "\n".join(lines)


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
        *_pooler_problems(config),
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
    problems = (
        *problems,
        *_service_problems(config),
        *_webhook_problems(config),
        *_multi_host_problems(config),
        (
            config.metrics and config.http_port is None,
            "AUTHSVC_METRICS needs AUTHSVC_HTTP_PORT: /metrics is served on the HTTP port",
        ),
    )
    for failed, message in problems:
        if failed:
            raise ConfigError(message)


def _pooler_problems(config: Config) -> Sequence[tuple[bool, str]]:
    behind_pgbouncer = config.database_pooler is DatabasePooler.PGBOUNCER_TRANSACTION
    return (
        (
            # LISTEN and session-level locks would land on whichever server session is free.
            behind_pgbouncer and config.listen_database_url is None,
            "AUTHSVC_DATABASE_POOLER=pgbouncer-transaction needs AUTHSVC_LISTEN_DATABASE_URL: "
            "a URL that reaches PostgreSQL directly, for LISTEN and session-level locks",
        ),
        (
            # The outbox's settings travel as startup parameters, which PgBouncer refuses;
            # dropping them instead (ignore_startup_parameters) would lose every event.
            behind_pgbouncer and bool(config.webhook_urls),
            "AUTHSVC_WEBHOOK_URLS cannot be used with AUTHSVC_DATABASE_POOLER="
            "pgbouncer-transaction yet: the outbox's per-connection settings are startup "
            "parameters, which PgBouncer refuses",
        ),
    )


def check_database(config: Config, *, has_citus: bool) -> None:
    """ConfigError if a setting cannot work on the database the server found as it
    started (the checks the settings alone cannot make)."""
    for failed, message in _database_problems(config, has_citus=has_citus):
        if failed:
            raise ConfigError(message)


def _database_problems(config: Config, *, has_citus: bool) -> Sequence[tuple[bool, str]]:
    return (
        (
            # The outbox is written by triggers on sessions, which Citus refuses on a
            # distributed table (migration 0028 drops them there): no event would be sent.
            has_citus and bool(config.webhook_urls),
            "AUTHSVC_WEBHOOK_URLS cannot be used on Citus yet (the database has the citus "
            "extension): the outbox is written by triggers on sessions, which Citus refuses "
            "on a distributed table, so no event would ever be delivered",
        ),
    )


# What a URL naming several hosts must ask for, so that only the primary is ever used.
_WRITABLE_TARGETS = frozenset({"read-write", "primary"})


def _may_pick_a_standby(url: str) -> bool:
    """Whether `url` names several hosts (`h1:5432,h2:5432`, or `?host=a,b`) without
    `target_session_attrs=read-write` (or `primary`): then the first host that answers
    is used, a standby included, and every write fails."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2].split(",") + ",".join(query.get("host", [])).split(",")
    named = [host for host in hosts if host]
    targets = set(query.get("target_session_attrs", []))
    return len(named) > 1 and not targets & _WRITABLE_TARGETS


def _multi_host_problems(config: Config) -> Sequence[tuple[bool, str]]:
    return tuple(
        (
            url is not None and _may_pick_a_standby(url),
            f"{env} names several hosts: add target_session_attrs=read-write to it, so that "
            "only the primary is used, whichever host that is (docs/operations.md, Failover)",
        )
        for env, url in (
            ("AUTHSVC_DATABASE_URL", config.database_url),
            ("AUTHSVC_LISTEN_DATABASE_URL", config.listen_database_url),
        )
    )


def _service_problems(config: Config) -> Sequence[tuple[bool, str]]:
    return (
        (
            # Without mTLS no call carries a certificate: the list would admit nobody.
            bool(config.service_identities) and config.tls_client_ca_file is None,
            "AUTHSVC_SERVICE_IDENTITIES needs mutual TLS: set AUTHSVC_TLS_CLIENT_CA_FILE",
        ),
        (
            config.require_service_credentials
            and not config.service_keys.entries
            and not config.service_identities,
            "AUTHSVC_REQUIRE_SERVICE_CREDENTIALS needs AUTHSVC_SERVICE_KEYS or "
            "AUTHSVC_SERVICE_IDENTITIES: otherwise nobody may call ValidateToken and GetJwks",
        ),
        (
            # A name that is neither would admit nobody: most likely a typo.
            bool(_unknown_operators(config)),
            f"AUTHSVC_OPERATORS names {', '.join(_unknown_operators(config))}, which "
            "AUTHSVC_SERVICE_KEYS and AUTHSVC_SERVICE_IDENTITIES do not",
        ),
    )


def _webhook_problems(config: Config) -> Sequence[tuple[bool, str]]:
    return (
        (
            None not in (config.webhook_secret, config.webhook_secret_file),
            "set AUTHSVC_WEBHOOK_SECRET or AUTHSVC_WEBHOOK_SECRET_FILE, not both",
        ),
        (
            bool(config.webhook_urls) and config.webhook_secrets is None,
            "AUTHSVC_WEBHOOK_URLS needs AUTHSVC_WEBHOOK_SECRET (or AUTHSVC_WEBHOOK_SECRET_FILE): "
            "every delivery is signed",
        ),
    )


def _unknown_operators(config: Config) -> list[str]:
    known = {*config.service_keys.names, *config.service_identities}
    return [name for name in config.operators if name not in known]


if __name__ == "__main__":
    _main = argparse.ArgumentParser(prog="python -m authsvc.config")
    _main.add_argument(
        "--markdown", action="store_true", required=True, help="print docs/configuration.md"
    )
    _main.parse_args()
    sys.stdout.write(markdown())
