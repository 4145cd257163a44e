"""Every Prometheus metric the service exports, declared once.

The rules and dashboard in deploy/ are written against these names, and their tests check
them against `EXPORTED_METRICS`: rename one only with them. docs/operations.md has the
table for operators.

The metrics live in prometheus-client's default registry. Under `serve --workers N` each
worker runs with PROMETHEUS_MULTIPROC_DIR set (workers.py), so the client keeps every
value in a file there and any worker's scrape adds up all of them; each gauge says below
how its workers' values combine. Label children that a hot path uses are bound once
here: `.labels()` costs a dict lookup and a lock per call.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "DATABASE_UP",
    "DB_POOL_CONNECTIONS",
    "END_KINDS",
    "EXPORTED_METRICS",
    "EXPORTED_SERIES",
    "LIVE_SESSIONS",
    "LOGINS",
    "LOGIN_BAD_CREDENTIALS",
    "LOGIN_DISABLED",
    "LOGIN_OK",
    "LOGIN_SESSION_LIMIT",
    "LOGIN_THROTTLED",
    "REFRESHES",
    "REFRESH_EXPIRED",
    "REFRESH_GRACE_REPLAY",
    "REFRESH_IDEMPOTENT_REPLAY",
    "REFRESH_INVALID",
    "REFRESH_OK",
    "REFRESH_REUSED",
    "REFRESH_SESSION_OVER",
    "REVOCATION_FEED_LAG",
    "REVOCATION_FEED_SUBSCRIBERS",
    "RPC_DURATION",
    "RPC_HANDLED",
    "SESSIONS_CREATED",
    "SESSIONS_ENDED",
    "SESSION_COUNT_BANDS",
    "SESSION_DURATION",
    "SIGNING_KEY_AGE",
    "SIGNING_KEY_ROTATION_PERIOD",
    "SWEEPER_PASS_DURATION",
    "SWEEPER_ROWS_DELETED",
    "USERS_BY_LIVE_SESSIONS",
    "USERS_WITH_LIVE_SESSIONS",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_OUTBOX_BACKLOG",
    "counting_failures",
    "exposition",
    "session_ended",
]

# A `_created` series per counter and histogram doubles the scrape for a figure no rule
# uses (and multiprocess mode drops it anyway): one behaviour in both modes.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library

# --- RPCs --------------------------------------------------------------------

RPC_HANDLED: Final = Counter(
    "authsvc_rpc_handled",
    "RPCs completed, by service, method, status code and ErrorInfo reason (empty if none).",
    ["service", "method", "code", "reason"],
)
RPC_DURATION: Final = Histogram(
    "authsvc_rpc_duration_seconds",
    "Time from a call's arrival to its answer (a stream's: to its end).",
    ["service", "method"],
    # Validate and the access-token RPCs answer in well under a millisecond; Login and
    # Register hash a password (tens to hundreds of milliseconds).
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# --- signing in and refreshing ------------------------------------------------

LOGINS: Final = Counter(
    "authsvc_logins",
    "Login attempts by outcome: ok, bad_credentials (unknown email or wrong password), "
    "throttled (refused by the login throttle), disabled (right password, disabled account), "
    "session_limit (right password, refused by AUTHSVC_SESSION_LIMIT_POLICY=refuse).",
    ["outcome"],
)
REFRESHES: Final = Counter(
    "authsvc_refreshes",
    "Refresh attempts by outcome: ok, grace_replay (a rotated token within the grace "
    "period, answered with its successor), idempotent_replay (a rotated token again with "
    "the idempotency key of its rotation, answered with the same successor), expired (the "
    "token), reused (a rotated token after the grace period: the session is revoked), "
    "session_over (revoked or expired session), invalid (unknown or malformed token).",
    ["outcome"],
)

# Bound once (and so exported at 0 before the first event, so rate() sees the first one).
LOGIN_OK: Final = LOGINS.labels(outcome="ok")
LOGIN_BAD_CREDENTIALS: Final = LOGINS.labels(outcome="bad_credentials")
LOGIN_THROTTLED: Final = LOGINS.labels(outcome="throttled")
LOGIN_DISABLED: Final = LOGINS.labels(outcome="disabled")
LOGIN_SESSION_LIMIT: Final = LOGINS.labels(outcome="session_limit")
REFRESH_OK: Final = REFRESHES.labels(outcome="ok")
REFRESH_GRACE_REPLAY: Final = REFRESHES.labels(outcome="grace_replay")
REFRESH_IDEMPOTENT_REPLAY: Final = REFRESHES.labels(outcome="idempotent_replay")
REFRESH_EXPIRED: Final = REFRESHES.labels(outcome="expired")
REFRESH_REUSED: Final = REFRESHES.labels(outcome="reused")
REFRESH_SESSION_OVER: Final = REFRESHES.labels(outcome="session_over")
REFRESH_INVALID: Final = REFRESHES.labels(outcome="invalid")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def counting_failures(
    *failures: tuple[type[Exception], Counter | None],
) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Coroutine[Any, Any, _T]]]:
    """Count the decorated call's failure on the counter of the first matching exception
    type (None: not counted); the exception goes on. Successes are the callee's to count."""

    def decorate(function: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        @functools.wraps(function)
        async def counted(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            try:
                return await function(*args, **kwargs)
            except Exception as exc:
                for kind, counter in failures:
                    if isinstance(exc, kind):
                        if counter is not None:
                            counter.inc()
                        break
                raise

        return counted

    return decorate


# --- sessions -------------------------------------------------------------------

SESSIONS_CREATED: Final = Counter(
    "authsvc_sessions_created", "Sessions started (Login, and Register when it signs in)."
)
SESSIONS_ENDED: Final = Counter(
    "authsvc_sessions_ended",
    "Sessions ended, by end reason (lower case) and kind (logout, revoked, reuse, "
    "idle_expiry, absolute_expiry). Expiries are counted by the sweeper, once each.",
    ["reason", "kind"],
)
SESSION_DURATION: Final = Histogram(
    "authsvc_session_duration_seconds",
    "A session's life from its creation to its end, observed as it ends, by kind.",
    ["kind"],
    buckets=(
        60,
        300,
        900,
        3600,
        4 * 3600,
        12 * 3600,
        86400,
        3 * 86400,
        7 * 86400,
        14 * 86400,
        30 * 86400,
        90 * 86400,
    ),
)

# Every end reason (SessionEndReason's names, lower case) and its kind: the one table.
END_KINDS: Final = {
    "user_logout": "logout",
    "user_revoked": "revoked",
    "admin_revoked": "revoked",
    "user_disabled": "revoked",
    "password_changed": "revoked",
    "password_reset": "revoked",
    "user_deleted": "revoked",
    "bulk_revoked": "revoked",
    "session_limit_evicted": "revoked",
    "second_factor_changed": "revoked",
    "refresh_token_reuse": "reuse",
    "idle_timeout": "idle_expiry",
    "absolute_timeout": "absolute_expiry",
}


class _Ending:
    """The counter and histogram children one end reason moves."""

    __slots__ = ("duration", "ended")

    def __init__(self, reason: str, kind: str) -> None:
        self.ended = SESSIONS_ENDED.labels(reason=reason, kind=kind)
        self.duration = SESSION_DURATION.labels(kind=kind)


_ENDINGS: Final = {reason: _Ending(reason, kind) for reason, kind in END_KINDS.items()}


def session_ended(reason: str, lived: float) -> None:
    """Count one session ended for `reason` (an END_KINDS key) after `lived` seconds."""
    ending = _ENDINGS[reason]
    ending.ended.inc()
    ending.duration.observe(lived)


# Sampled by one worker every AUTHSVC_METRICS_SAMPLE_INTERVAL, one query, never per
# scrape. Every worker holds a zero for them from import; the latest write of a live
# worker is the sample.
LIVE_SESSIONS: Final = Gauge(
    "authsvc_live_sessions",
    "Sessions neither ended nor past a deadline, at the last sample.",
    multiprocess_mode="livemostrecent",
)
USERS_WITH_LIVE_SESSIONS: Final = Gauge(
    "authsvc_users_with_live_sessions",
    "Users with at least one live session, at the last sample.",
    multiprocess_mode="livemostrecent",
)
USERS_BY_LIVE_SESSIONS: Final = Gauge(
    "authsvc_users_by_live_sessions",
    "Users by how many live sessions (devices) they have, at the last sample.",
    ["sessions"],
    multiprocess_mode="livemostrecent",
)
# The `sessions` bands of USERS_BY_LIVE_SESSIONS: (label, least, most or None).
SESSION_COUNT_BANDS: Final = (
    ("1", 1, 1),
    ("2", 2, 2),
    ("3-5", 3, 5),
    ("6-10", 6, 10),
    ("11+", 11, None),
)

# --- the revocation feed -------------------------------------------------------

REVOCATION_FEED_LAG: Final = Gauge(
    "authsvc_revocation_feed_lag_seconds",
    "How far behind the database this process's revocation listener is: 0 while current, "
    "the time since it was last current while it is not (disconnected, catching up).",
    # The worst worker: a revocation is late wherever any one of them lags.
    multiprocess_mode="livemax",
)
REVOCATION_FEED_SUBSCRIBERS: Final = Gauge(
    "authsvc_revocation_feed_subscribers",
    "WatchRevocations streams open.",
    multiprocess_mode="livesum",
)

# --- the database ---------------------------------------------------------------

DB_POOL_CONNECTIONS: Final = Gauge(
    "authsvc_db_pool_connections",
    "Connections of the database pools, by state (in_use, idle).",
    ["state"],
    multiprocess_mode="livesum",
)
DATABASE_UP: Final = Gauge(
    "authsvc_database_up",
    "1 while the health probe reaches the database, else 0.",
    # Any worker that cannot reach it is a problem worth the alert.
    multiprocess_mode="livemin",
)

# --- the sweeper ------------------------------------------------------------------

SWEEPER_ROWS_DELETED: Final = Counter(
    "authsvc_sweeper_rows_deleted",
    "Rows the sweeper deleted, by table.",
    ["table"],
)
SWEEPER_PASS_DURATION: Final = Histogram(
    "authsvc_sweeper_pass_duration_seconds",
    "How long one sweep over every table took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# --- webhooks --------------------------------------------------------------------

WEBHOOK_DELIVERIES: Final = Counter(
    "authsvc_webhook_deliveries",
    "Webhook delivery attempts, by outcome (delivered, retried, failed).",
    ["outcome"],
)
WEBHOOK_OUTBOX_BACKLOG: Final = Gauge(
    "authsvc_webhook_outbox_backlog",
    "Webhook deliveries pending (counted up to 100000) at the worker's last idle pass.",
    # One outbox for all: every worker counts the same rows.
    multiprocess_mode="livemax",
)

# --- signing keys -----------------------------------------------------------------

SIGNING_KEY_AGE: Final = Gauge(
    "authsvc_signing_key_age_seconds",
    "Age of the key that signs new access tokens.",
    multiprocess_mode="livemax",
)
SIGNING_KEY_ROTATION_PERIOD: Final = Gauge(
    "authsvc_signing_key_rotation_period_seconds",
    "AUTHSVC_SIGNING_KEY_ROTATION_PERIOD: the age past which the signing key is overdue.",
    multiprocess_mode="livemax",
)

_ALL: Final[tuple[MetricWrapperBase, ...]] = (
    RPC_HANDLED,
    RPC_DURATION,
    LOGINS,
    REFRESHES,
    SESSIONS_CREATED,
    SESSIONS_ENDED,
    SESSION_DURATION,
    LIVE_SESSIONS,
    USERS_WITH_LIVE_SESSIONS,
    USERS_BY_LIVE_SESSIONS,
    REVOCATION_FEED_LAG,
    REVOCATION_FEED_SUBSCRIBERS,
    DB_POOL_CONNECTIONS,
    DATABASE_UP,
    SWEEPER_ROWS_DELETED,
    SWEEPER_PASS_DURATION,
    WEBHOOK_DELIVERIES,
    WEBHOOK_OUTBOX_BACKLOG,
    SIGNING_KEY_AGE,
    SIGNING_KEY_ROTATION_PERIOD,
)


def _exported_name(metric: MetricWrapperBase) -> str:
    """The name a query uses for the metric's main series (a counter's ends in _total)."""
    family = next(iter(metric.describe()))
    return f"{family.name}_total" if family.type == "counter" else family.name


def _series(metric: MetricWrapperBase) -> tuple[str, ...]:
    family = next(iter(metric.describe()))
    if family.type == "histogram":
        return tuple(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return (_exported_name(metric),)


# Every metric name the service exports, as the context of issue 13 names them
# (`authsvc_logins_total`, `authsvc_rpc_duration_seconds`, ...).
EXPORTED_METRICS: Final = frozenset(_exported_name(metric) for metric in _ALL)
# Every series name a PromQL query may use: a histogram's _bucket, _sum and _count.
EXPORTED_SERIES: Final = frozenset(name for metric in _ALL for name in _series(metric))


def exposition(accept: str, shared_dir: Path | None) -> tuple[bytes, str]:
    """A scrape's body and content type, in the format `accept` (the request's Accept
    header) asks for: this process's registry, or with `shared_dir` (the workers'
    PROMETHEUS_MULTIPROC_DIR) the authsvc metrics of every worker, added up."""
    encode, content_type = choose_encoder(accept)
    if shared_dir is None:
        return encode(REGISTRY), content_type
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(shared_dir))  # type: ignore[no-untyped-call]
    return encode(registry), content_type
