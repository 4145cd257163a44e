"""Composition root: builds the server and owns its lifecycle.

Start order: the gRPC port opens first and answers readiness checks with NOT_SERVING and
liveness (api/health.py) with SERVING; a readiness task then migrates the schema and loads
the signing keys, retrying until the database answers, and only then flips readiness to
SERVING. A database outage later flips it back, and back again on recovery; liveness
ignores the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from authsvc.api.admin_servicer import AdminServicer
from authsvc.api.caller import Caller
from authsvc.api.factor_rpcs import FactorRpcs
from authsvc.api.health import HealthServicer
from authsvc.api.http_port import HttpPort
from authsvc.api.interceptors import EdgeInterceptor, InFlight
from authsvc.api.metrics_endpoint import MetricsEndpoint
from authsvc.api.passkey_rpcs import PasskeyRpcs
from authsvc.api.reflection import enable_reflection
from authsvc.api.service_auth import OperatorGuard, ServiceGuard
from authsvc.api.servicer import AuthServicer, OpenStreams
from authsvc.api.well_known import WellKnown
from authsvc.config import KEY_ENCRYPTION_KEYS_SETTINGS, Config, ConfigError, check_database
from authsvc.core.clock import Clock
from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.factors import SecondFactorPolicy
from authsvc.descriptors import DescriptorWatch
from authsvc.domain import devices, validation
from authsvc.domain.access_tokens import AccessTokens
from authsvc.domain.admin import AdminActions
from authsvc.domain.bulk_revocation import BulkRevocation
from authsvc.domain.erasure import AccountErasure
from authsvc.domain.factors import FactorService
from authsvc.domain.key_encryption import KeyEncryptionError, KeyWrapper, LocalKeyWrapper
from authsvc.domain.lineage import SessionLineages
from authsvc.domain.liveness import LivenessCache
from authsvc.domain.passkeys import PasskeyService, RelyingParty
from authsvc.domain.password_resets import PasswordResets
from authsvc.domain.passwords import Argon2Hasher
from authsvc.domain.refusals import RefusalLog
from authsvc.domain.revocation_watch import RevocationFanout, RevocationWatch
from authsvc.domain.revocations import RevocationFeed
from authsvc.domain.session_limits import SessionLimit
from authsvc.domain.sessions import Locator, SessionPolicy, SessionService
from authsvc.domain.signing_keys import KeyRing
from authsvc.domain.throttle import (
    LoginLimits,
    LoginThrottle,
    SharedAddresses,
    SignUpLimits,
    SignUpThrottle,
)
from authsvc.domain.webhook_deliveries import WebhookDeliveries
from authsvc.geoip import open_geoip_database
from authsvc.ports import BindFailed, bind_listener, probe_port
from authsvc.store.accounts import PgAccountStore
from authsvc.store.admin import PgAdminStore
from authsvc.store.audit import PgAuditStore
from authsvc.store.bulk_revocation import PgBulkRevocationStore
from authsvc.store.census import PgSessionCensus
from authsvc.store.erasure import PgErasureStore
from authsvc.store.factors import PgFactorStore
from authsvc.store.keys import PgKeyStore
from authsvc.store.lineage import PgLineageStore
from authsvc.store.migrate import apply_migrations
from authsvc.store.passkeys import PgPasskeyStore
from authsvc.store.password_resets import PgPasswordResetStore
from authsvc.store.pending_logins import PgPendingLoginStore
from authsvc.store.pool import Pool, has_citus, open_connections, ping
from authsvc.store.revocations import PgRevocationListener, PgRevocationLog
from authsvc.store.sessions import PgSessionStore
from authsvc.store.sweep import PgSweepStore
from authsvc.store.throttle import PgLoginThrottleStore
from authsvc.store.users import PgUserStore, canonicalize_queued_emails
from authsvc.store.webhooks import PgWebhookDeliveryStore
from authsvc.sweeper import Sweeper
from authsvc.telemetry import metrics
from authsvc.telemetry.sampler import Sampler
from authsvc.tls import http_tls, server_credentials, transport
from authsvc.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
)
from authsvc.webhook_worker import WebhookWorker

if TYPE_CHECKING:
    # Imported by the caller only with tracing on: off, OpenTelemetry is never loaded.
    from authsvc.telemetry.tracing import Tracing

__all__ = [
    "AuthServer",
    "build_hasher",
    "build_key_ring",
    "build_key_wrapper",
    "build_login_throttle",
    "build_refusal_log",
    "build_revocation_feed",
    "build_session_service",
    "build_sweeper",
    "build_webhook_worker",
    "connection_options",
    "migrate_database",
]

_log = logging.getLogger(__name__)

SERVICE_NAME = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
ADMIN_SERVICE_NAME = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
_HEALTH_PROBE_INTERVAL = 2.0
_READY_RETRY_MAX = 5.0


class AuthServer:
    """One process's server: gRPC, health, the HTTP port if configured, background tasks,
    on a given pool.

    `shares_port`: other processes bind the same ports (SO_REUSEPORT) and the
    kernel spreads connections among them; off, a port in use fails the start
    with PortInUse.
    `runs_sweeper`: whether this process runs the periodic sweep (one worker
    of a supervisor does; `sweeper.run_once()` works either way).
    `database_url`: the pool's URL, where the configuration has none (an embedded
    database); the revocation feed connects there unless its own URL is set. With
    neither, the process has no feed and checks every session in the database.
    `metrics_dir`: where the supervisor's workers keep their metrics (each worker's
    PROMETHEUS_MULTIPROC_DIR), so that a scrape of any answers for all; None: this
    process's own.
    `tracing`: trace each call (the caller owns it and closes it after `stop`); None: off.
    """

    def __init__(
        self,
        config: Config,
        *,
        pool: Pool,
        clock: Clock,
        shares_port: bool = False,
        runs_sweeper: bool = True,
        database_url: str | None = None,
        metrics_dir: Path | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        # First: a bad certificate or key fails here, before anything needs closing.
        self._credentials = server_credentials(config)
        self._http_tls = http_tls(config) if config.http_port is not None else None
        self._shares_port = shares_port
        self._runs_sweeper = runs_sweeper
        self.config = config
        self.pool = pool
        self.clock = clock
        self.hasher = build_hasher(config)
        self.keys = build_key_ring(config, pool, clock)
        self.refusals = build_refusal_log(pool)
        self.throttle = build_login_throttle(config, pool, clock, self.refusals)
        self.revocation_feed = build_revocation_feed(config, clock, database_url)
        self.liveness = None
        if self.revocation_feed is not None:
            self.liveness = LivenessCache(
                self.revocation_feed, clock, window=config.revocation_window
            )
            self.revocation_feed.observe(self.liveness)
        # After the steps above that can still fail the start, so that none leaves it open.
        self.locator = open_geoip_database(config)
        self.sessions = build_session_service(
            config,
            pool,
            clock,
            self.keys,
            self.hasher,
            self.refusals,
            throttle=self.throttle,
            liveness=self.liveness,
            locator=self.locator,
        )
        # Passkeys (WebAuthn): off unless AUTHSVC_WEBAUTHN_RP_ID is set.
        self.passkeys = build_passkey_service(config, pool, clock, self.sessions, self.throttle)
        # Second factors (TOTP, recovery codes): the sessions' SecondFactors.
        self.factors = FactorService(
            store=PgFactorStore(pool),
            wrapper=build_key_wrapper(config),
            throttle=self.throttle,
            clock=clock,
            endings=self.sessions.endings,
            passkeys=self.passkeys,
            issuer=config.totp_issuer,
            required_of_everyone=config.second_factor_policy is SecondFactorPolicy.ALL,
        )
        self.sessions.use_factors(self.factors)
        self.password_resets = PasswordResets(
            store=PgPasswordResetStore(pool),
            sessions=self.sessions,
            hasher=self.hasher,
            throttle=self.throttle,
            clock=clock,
            ttl=config.password_reset_ttl,
            password_min_length=config.password_min_length,
        )
        self.erasure = AccountErasure(
            store=PgErasureStore(pool), sessions=self.sessions, clock=clock
        )
        self.sweeper = build_sweeper(config, pool, clock)
        # None without endpoints: then the pool's triggers write no events either.
        self.webhooks = build_webhook_worker(config, pool, clock)
        # Runs (with metrics on) where the sweeper runs: one process of a supervisor.
        self.sampler = Sampler(
            PgSessionCensus(pool), clock, interval=config.metrics_sample_interval
        )
        # WatchRevocations' subscribers; without a feed it never starts (NOT_READY).
        self.revocation_fanout = RevocationFanout(
            capacity=config.revocation_subscriber_buffer,
            max_subscribers=config.revocation_max_subscribers,
        )
        if self.revocation_feed is not None:
            self.revocation_feed.observe(self.revocation_fanout)
        self.health = HealthServicer()
        self.ready = asyncio.Event()
        self._startup_error: ConfigError | None = None
        self.port = 0
        # None: no HTTP port (the default).
        self.http_port: int | None = None
        routes = [
            *WellKnown(self.keys, issuer=config.issuer, public_url=config.http_public_url).routes()
        ]
        if config.metrics:
            metrics.SIGNING_KEY_ROTATION_PERIOD.set(
                config.signing_key_rotation_period.total_seconds()
            )
            routes += MetricsEndpoint(refresh=self._read_gauges, shared_dir=metrics_dir).routes()
        self._http = (
            None
            if config.http_port is None
            else HttpPort(routes, read_timeout=config.http_read_timeout)
        )
        self._tasks: list[asyncio.Task[None]] = []
        # Set once migrated and keys loaded; unlike health, never unset by a later outage.
        self._started = asyncio.Event()
        self._in_flight = InFlight()
        self._streams = OpenStreams()
        edge = EdgeInterceptor(
            self._in_flight,
            started=self._started.is_set,
            with_metrics=config.metrics,
            join_trace=None if tracing is None else tracing.join_call,
        )
        self._server = grpc.aio.server(
            # The tracing interceptor first: the edge then runs inside the call's span.
            interceptors=[edge] if tracing is None else [tracing.interceptor, edge],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                ("grpc.so_reuseport", 1 if shares_port else 0),
                *connection_options(config),
            ],
        )
        services = ServiceGuard(config.service_keys, config.service_identities)
        caller = Caller(self.sessions, config.trusted_proxies)
        # Second factors: TOTP and recovery codes; the sessions' assurance for step-up.
        factor_rpcs = FactorRpcs(caller, self.factors, self.sessions)
        # Passkeys (WebAuthn).
        passkey_rpcs = PasskeyRpcs(caller, self.passkeys, self.sessions)
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthServicer(
                self.sessions,
                self.keys,
                trusted_proxies=config.trusted_proxies,
                services=services,
                revocations=RevocationWatch(
                    PgRevocationLog(pool),
                    self.revocation_fanout,
                    clock,
                    is_current=self._feed_is_current,
                    window=config.revocation_window,
                    heartbeat_interval=config.revocation_heartbeat_interval,
                ),
                streams=self._streams,
                resets=self.password_resets,
                factor_rpcs=factor_rpcs,
                passkey_rpcs=passkey_rpcs,
                require_service_credentials=config.require_service_credentials,
            ),
            self._server,
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(
                guard=OperatorGuard(services, config.operators),
                trusted_proxies=config.trusted_proxies,
                actions=AdminActions(
                    store=PgAdminStore(pool),
                    sessions=self.sessions,
                    clock=clock,
                    login_failure_window=config.login_failure_window,
                ),
                resets=self.password_resets,
                erasure=self.erasure,
                bulk=BulkRevocation(
                    store=PgBulkRevocationStore(pool), sessions=self.sessions, clock=clock
                ),
                lineages=SessionLineages(store=PgLineageStore(pool), clock=clock),
                webhooks=WebhookDeliveries(PgWebhookDeliveryStore(pool), clock),
                factors=self.factors,
            ),
            self._server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        enable_reflection(self._server, (SERVICE_NAME, ADMIN_SERVICE_NAME, health.SERVICE_NAME))

    async def start(self) -> int:
        """Open the port and begin getting ready; return the bound port."""
        self.port = self._bind()
        try:
            http_socket = self._bind_http()
        except BindFailed:
            await self._server.stop(None)
            raise
        devices.warm_up()
        await self._set_serving(False)
        await self.health.report_alive()
        self.refusals.start()
        await self._server.start()
        if http_socket is not None and self._http is not None:
            await self._http.start(http_socket, self._http_tls)
            self.http_port = http_socket.getsockname()[1]
        self._spawn(DescriptorWatch().run())
        self._spawn(self._become_ready())
        _log.info(
            "listening",
            extra={
                "event": "listening",
                "host": self.config.host,
                "port": self.port,
                "transport": transport(self.config),
                "http_port": self.http_port,
            },
        )
        return self.port

    def _bind(self) -> int:
        """Bind the port, first thing (nothing to undo if it fails); BindFailed if it cannot."""
        host, port = self.config.host, self.config.port
        address = f"{host}:{port}"
        try:
            if self._credentials is None:
                return self._server.add_insecure_port(address)
            return self._server.add_secure_port(address, self._credentials)
        except RuntimeError as exc:
            # grpc says only "Failed to bind"; a bind of our own tells in-use from the rest.
            probe_port(host, port)
            raise BindFailed(f"cannot bind {address}") from exc

    def _bind_http(self) -> socket.socket | None:
        """Bind the HTTP port, if there is one; BindFailed if it cannot."""
        if self.config.http_port is None:
            return None
        host, port = self.config.http_listen_host, self.config.http_port
        return bind_listener(host, port, reuse_port=self._shares_port)

    async def wait_ready(self) -> None:
        """Return once ready; ConfigError if the server can never be (the stored signing
        keys do not decrypt with the configured key-encryption keys)."""
        await self.ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    async def stop(self, grace: timedelta | None = None) -> None:
        """Stop serving: health first, then in-flight calls get `grace`, then tasks.

        Streams (health Watch) never end by themselves, so once the unary calls
        are done the server is stopped at once rather than at the end of `grace`.
        """
        await self.health.enter_graceful_shutdown()
        # WatchRevocations streams end now, UNAVAILABLE, so their subscribers resume elsewhere.
        self.revocation_fanout.close()
        if grace is None:
            await self._server.stop(None)
        else:
            # Stops accepting calls now; lets the running ones finish for `grace`.
            stopping = asyncio.create_task(self._server.stop(grace.total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace.total_seconds()):
                    await self.health.wait_watchers_told_not_serving()
                    await self._in_flight.wait_idle()
                    await self._streams.wait_idle()
            await self._server.stop(0)
            await stopping
        if self._http is not None:
            await self._http.stop()
        for task in self._tasks:
            task.cancel()
        # A task cancelled inside a database call may end with the driver's own
        # error instead of CancelledError; either way it is over.
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if not isinstance(outcome, asyncio.CancelledError | None):
                _log.warning("background task ended with %r", outcome, extra={"event": "stop"})
        self._tasks.clear()
        if self.webhooks is not None:
            await self.webhooks.aclose()
        if self.revocation_feed is not None:
            await self.revocation_feed.aclose()
        await self.throttle.aclose()
        await self.refusals.aclose()
        self.hasher.close()
        if self.locator is not None:
            self.locator.close()

    def _feed_is_current(self) -> bool:
        return self.revocation_feed is not None and self.revocation_feed.is_current

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    async def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        # AdminService needs the database as AuthService does.
        for service in ("", SERVICE_NAME, ADMIN_SERVICE_NAME):
            await self.health.set(service, status)

    async def _become_ready(self) -> None:
        delay = 0.1
        while True:
            try:
                # Before migrating: a refused setting changes nothing in the database.
                check_database(self.config, has_citus=await has_citus(self.pool))
                await migrate_database(self.pool, self.clock)
                await self.keys.ensure_active_key()
                # The pool starts empty so the server can start before its database.
                await open_connections(self.pool, self.config.db_pool_min_size)
                break
            except ConfigError as exc:
                # Retrying cannot help either: the settings must change.
                self._startup_error = exc
                _log.error("%s", exc, extra={"event": "config_refused"})
                self.ready.set()
                return
            except KeyEncryptionError as exc:
                # Retrying cannot help: it takes a configuration change, so say which.
                self._startup_error = ConfigError(f"{KEY_ENCRYPTION_KEYS_SETTINGS}: {exc}")
                _log.error(
                    "cannot decrypt the signing keys: %s",
                    exc,
                    extra={"event": "signing_keys_undecryptable"},
                )
                self.ready.set()
                return
            except DatabaseUnavailable as exc:
                # Wrong credentials or a missing database are retried too: an operator's
                # fix heals them without a restart, as the end of an outage does.
                _log.warning(
                    "database not ready, retrying in %.1fs: %s",
                    delay,
                    exc.detail,
                    extra={"event": "database_not_ready"},
                )
            except Exception:
                # A bug or a broken migration: say so loudly, rather than stay NOT_SERVING
                # in silence, and keep trying in case it was a passing fault.
                _log.exception(
                    "start-up failed, retrying in %.1fs", delay, extra={"event": "startup_failed"}
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _READY_RETRY_MAX)
        # After the migrations: the feed reads the log they create.
        if self.revocation_feed is not None:
            self.revocation_feed.start()
        self._started.set()
        await self._set_serving(True)
        self.ready.set()
        _log.info("ready", extra={"event": "ready", "address": f"{self.config.host}:{self.port}"})
        if self.webhooks is not None:
            # Every process: SKIP LOCKED claims share the outbox among them.
            self._spawn(self.webhooks.run())
        if self._runs_sweeper:
            self._spawn(self.sweeper.run())
            if self.config.metrics:
                self._spawn(self.sampler.run())
        self._spawn(self._reload_keys())
        self._spawn(self._watch_database())

    async def _reload_keys(self) -> None:
        while True:
            await asyncio.sleep(self.keys.reload_interval.total_seconds())
            try:
                await self.keys.reload()
            except DatabaseUnavailable as exc:
                _log.warning("key reload failed: %s", exc, extra={"event": "key_reload_failed"})
            except KeyEncryptionError as exc:
                # Another host stored a key under a KEK this one lacks: keep the keys loaded.
                _log.error("key reload failed: %s", exc, extra={"event": "key_reload_failed"})

    def _read_gauges(self) -> None:
        """Set the gauges read from this process's state rather than counted: at each
        health probe, and before this process answers a scrape."""
        in_use = self.pool.get_size() - self.pool.get_idle_size()
        metrics.DB_POOL_CONNECTIONS.labels(state="in_use").set(in_use)
        metrics.DB_POOL_CONNECTIONS.labels(state="idle").set(self.pool.get_idle_size())
        if self.revocation_feed is not None:
            metrics.REVOCATION_FEED_LAG.set(self.revocation_feed.lag)
        metrics.REVOCATION_FEED_SUBSCRIBERS.set(self.revocation_fanout.subscribers)
        age = self.keys.signing_key_age()
        if age is not None:
            metrics.SIGNING_KEY_AGE.set(age.total_seconds())

    async def _watch_database(self) -> None:
        """Health follows the database: NOT_SERVING while it cannot be reached."""
        serving = True
        if self.config.metrics:
            metrics.DATABASE_UP.set(1)
        while True:
            await asyncio.sleep(_HEALTH_PROBE_INTERVAL)
            healthy = await ping(self.pool, within=self.config.db_connect_timeout)
            if self.config.metrics:
                metrics.DATABASE_UP.set(1 if healthy else 0)
                self._read_gauges()
            if healthy != serving:
                serving = healthy
                await self._set_serving(serving)
                _log.warning(
                    "database %s",
                    "reachable" if healthy else "unreachable",
                    extra={"event": "database_health", "healthy": healthy},
                )


async def migrate_database(pool: Pool, clock: Clock) -> list[int]:
    """Apply the schema migrations, then the data step SQL cannot do: rewrite the emails that
    migration 0012 queued into their canonical form. Returns the versions applied."""
    applied = await apply_migrations(pool)
    await canonicalize_queued_emails(pool, validation.canonical_email, clock.now())
    return applied


# A vanished peer holding a stream (a health Watch) is found by the server's
# own ping within this, rather than at the connection's maximum age.
_SERVER_PING_INTERVAL = timedelta(minutes=5)


def connection_options(config: Config) -> list[tuple[str, int]]:
    """gRPC core arguments that bound how long, and how busily, a client holds a connection.

    Without them an idle connection is never closed and holds its descriptor for good.
    The idle timer runs from the moment the connection is accepted, so a client that
    connects and sends nothing is closed too.
    """

    def ms(span: timedelta) -> int:
        return int(span.total_seconds() * 1000)

    return [
        ("grpc.max_connection_idle_ms", ms(config.connection_idle_timeout)),
        ("grpc.max_connection_age_ms", ms(config.connection_max_age)),
        ("grpc.max_connection_age_grace_ms", ms(config.connection_max_age_grace)),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.keepalive_time_ms", ms(_SERVER_PING_INTERVAL)),
        # Pings from clients with no call in flight are allowed (they keep NAT paths
        # open); they do not count as activity, so the idle timeout still applies.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(config.keepalive_min_interval)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def build_hasher(config: Config) -> Argon2Hasher:
    return Argon2Hasher(
        time_cost=config.argon2_time_cost,
        memory_cost_kib=config.argon2_memory_kib,
        parallelism=config.argon2_parallelism,
        sign_in_workers=config.hash_workers,
        sign_up_workers=config.sign_up_hash_workers,
        queue_limit=config.hash_queue_limit,
    )


def build_refusal_log(pool: Pool) -> RefusalLog:
    return RefusalLog(PgAuditStore(pool))


def build_key_wrapper(config: Config) -> KeyWrapper:
    """The key-encryption keys from configuration (a KMS-backed KeyWrapper would be built
    here instead)."""
    keks = config.configured_key_encryption_keys
    if keks is None:
        raise ConfigError(f"{KEY_ENCRYPTION_KEYS_SETTINGS} is not set")
    source = (
        "AUTHSVC_KEY_ENCRYPTION_KEYS"
        if config.key_encryption_keys is not None
        else "AUTHSVC_KEY_ENCRYPTION_KEYS_FILE"
    )
    return LocalKeyWrapper(keks.keys, source=source)


def build_key_ring(config: Config, pool: Pool, clock: Clock) -> KeyRing:
    return KeyRing(
        PgKeyStore(pool),
        clock,
        build_key_wrapper(config),
        algorithm=config.signing_algorithm,
        access_token_ttl=config.access_token_ttl,
        reload_interval=config.key_reload_interval,
    )


def build_login_throttle(
    config: Config, pool: Pool, clock: Clock, refusals: RefusalLog
) -> LoginThrottle:
    return LoginThrottle(
        PgLoginThrottleStore(pool),
        clock,
        refusals,
        LoginLimits(
            per_account_and_address=config.login_failures_per_account_and_ip,
            per_account=config.login_failures_per_account,
            per_address=config.login_failures_per_ip,
            window=config.login_failure_window,
            shared=_shared_addresses(config),
            known_address_retention=config.known_address_retention,
        ),
    )


def _shared_addresses(config: Config) -> SharedAddresses:
    return SharedAddresses(config.shared_addresses, config.shared_address_factor)


def build_passkey_service(
    config: Config,
    pool: Pool,
    clock: Clock,
    sessions: SessionService,
    throttle: LoginThrottle,
) -> PasskeyService:
    """Passkeys, off (PASSKEYS_DISABLED) unless AUTHSVC_WEBAUTHN_RP_ID is set."""
    relying_party = None
    if config.webauthn_rp_id is not None:
        relying_party = RelyingParty(
            id=config.webauthn_rp_id,
            name=config.webauthn_rp_name,
            origins=config.webauthn_expected_origins,
        )
    return PasskeyService(
        store=PgPasskeyStore(pool),
        assurance=sessions,
        throttle=throttle,
        endings=sessions.endings,
        clock=clock,
        relying_party=relying_party,
    )


def build_session_service(
    config: Config,
    pool: Pool,
    clock: Clock,
    keys: KeyRing,
    hasher: Argon2Hasher,
    refusals: RefusalLog,
    *,
    throttle: LoginThrottle,
    liveness: LivenessCache | None = None,
    locator: Locator | None = None,
) -> SessionService:
    """The use cases, wired to PostgreSQL. `throttle` and `locator` are the caller's to
    close."""
    return SessionService(
        users=PgUserStore(pool),
        sessions=PgSessionStore(pool),
        accounts=PgAccountStore(pool),
        hasher=hasher,
        access_tokens=AccessTokens(
            keys,
            clock,
            issuer=config.issuer,
            audience=config.audience,
            ttl=config.access_token_ttl,
            clock_skew=config.clock_skew,
        ),
        clock=clock,
        policy=SessionPolicy(
            idle_timeout=config.session_idle_timeout,
            lifetime=config.session_lifetime,
            remember_me_lifetime=config.remember_me_lifetime,
            refresh_grace=config.refresh_grace_period,
            refresh_lineage=config.refresh_lineage,
            registration_enabled=config.registration_enabled,
            registration_reveals_accounts=config.registration_reveals_accounts,
            password_min_length=config.password_min_length,
            session_limit=SessionLimit(
                max_live=config.session_limit, policy=config.session_limit_policy
            ),
            second_factor_policy=config.second_factor_policy,
            step_up_window=config.step_up_window,
            pending_login_lifetime=config.pending_login_lifetime,
        ),
        pending_logins=PgPendingLoginStore(pool),
        throttle=throttle,
        liveness=liveness,
        locator=locator,
        sign_ups=SignUpThrottle(
            PgLoginThrottleStore(pool),
            clock,
            refusals,
            SignUpLimits(
                per_address=config.sign_ups_per_ip,
                total=config.sign_ups_total,
                window=config.sign_up_window,
                shared=_shared_addresses(config),
            ),
        ),
    )


def build_revocation_feed(
    config: Config, clock: Clock, database_url: str | None = None
) -> RevocationFeed | None:
    """The process's revocation feed on its own connection (AUTHSVC_LISTEN_DATABASE_URL,
    else the database's URL), not started; None without a URL."""
    dsn = config.listen_database_url or config.database_url or database_url
    if not dsn:
        return None
    return RevocationFeed(
        PgRevocationListener(
            str(dsn),
            connect_timeout=config.db_connect_timeout,
            statement_timeout=config.db_statement_timeout,
        ),
        clock,
        window=config.revocation_window,
        staleness=config.revocation_feed_staleness,
    )


def build_webhook_worker(config: Config, pool: Pool, clock: Clock) -> WebhookWorker | None:
    """The worker that posts the outbox; None when no endpoint is configured. The pool's
    connections must carry `outbox_settings` for events to be written at all."""
    secrets = config.webhook_secrets
    if not config.webhook_urls or secrets is None:
        return None
    return WebhookWorker(
        PgWebhookDeliveryStore(pool),
        clock,
        endpoints=config.webhook_urls,
        secrets=secrets.keys,
        timeout=config.webhook_timeout,
        concurrency=config.webhook_concurrency,
        poll_interval=config.webhook_poll_interval,
    )


def build_sweeper(config: Config, pool: Pool, clock: Clock) -> Sweeper:
    return Sweeper(
        PgSweepStore(pool),
        clock,
        interval=config.sweep_interval,
        batch_size=config.sweep_batch_size,
        batch_pause=config.sweep_batch_pause,
        ended_session_retention=config.ended_session_retention,
        audit_retention=config.audit_retention,
        login_failure_window=config.login_failure_window,
        known_address_retention=config.known_address_retention,
        refresh_grace=config.refresh_grace_period,
        revocation_retention=config.effective_revocation_retention,
        webhook_delivery_retention=config.webhook_delivery_retention,
    )
