"""Command line: serve | migrate | sweep | keys rotate | keys rewrap | users create | audit |
healthcheck."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc import config as config_module
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
from authsvc.config import Config, ConfigError
from authsvc.core.clock import SystemClock
from authsvc.core.errors import AuthError
from authsvc.core.models import RequestOrigin
from authsvc.descriptors import raise_open_files_limit
from authsvc.embedded_db import ensure_key_encryption_keys_file, start_embedded_postgres
from authsvc.log_format import configure_logging
from authsvc.store.audit import PgAuditStore
from authsvc.store.migrate import apply_migrations
from authsvc.store.pool import Pool, create_pool
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
        # min_size 0: start without a database and report NOT_SERVING until it answers
        # (the server opens db_pool_min_size connections once it does).
        async with _pool(config, dsn, min_size=0) as pool:
            server = AuthServer(
                config,
                pool=pool,
                clock=SystemClock(),
                shares_port=worker is not None,
                runs_sweeper=worker in (None, SWEEPING_WORKER),
            )
            port = await server.start()
            if worker is None:
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
        print("deleted " + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items()))


async def _rotate_keys(config: Config, dsn: str) -> None:
    async with _pool(config, dsn) as pool:
        await apply_migrations(pool)
        keys = build_key_ring(config, pool, SystemClock())
        await keys.ensure_active_key()
        # The audit trail's "who": the operator account and host that ran the command.
        operator = f"authsvc-cli ({_os_user()}@{socket.gethostname()})"
        key = await keys.rotate(RequestOrigin(user_agent=operator))
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


def _os_user() -> str:
    """The operator's account name; a uid without a passwd entry (containers) is its number."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _audit(user_id: uuid.UUID | None, limit: int) -> Action:
    async def run(config: Config, dsn: str) -> None:
        async with _pool(config, dsn) as pool:
            await apply_migrations(pool)
            events = await PgAuditStore(pool).recent(limit=limit, user_id=user_id)
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


def _create_user(email: str, display_name: str) -> Action:
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
                    email=email, password=password, display_name=display_name
                )
            finally:
                hasher.close()
        print(f"created user {user.id} <{user.email}>")

    return run


def _healthcheck(config: Config) -> int:
    """Exit 0 if the local server reports SERVING: for container health checks.

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
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(name)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authsvc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, parent: Any = commands) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        config_module.add_flags(sub)
        return sub

    serve = command("serve", "run the gRPC server (embedded PostgreSQL unless a URL is set)")
    # Set by the supervisor on the workers it starts (see workers.py); not for people.
    serve.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    command("migrate", "apply pending schema migrations and exit")
    command("sweep", "delete expired and long-revoked sessions once and exit")
    command("healthcheck", "exit 0 if the server on --host/--port is SERVING")
    keys = commands.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    command("rotate", "create a new signing key; old keys verify until their tokens expire", keys)
    command(
        "rewrap",
        "re-encrypt every stored private key under the first key-encryption key, so the "
        "others can be removed",
        keys,
    )
    users = commands.add_parser("users", help="accounts").add_subparsers(
        dest="users_command", required=True
    )
    create = command("create", "create an account; password from stdin or a prompt", users)
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", default="")
    audit = command("audit", "print recent security events as JSON lines, newest first")
    audit.add_argument("--user", type=uuid.UUID, default=None, help="only this user's events")
    audit.add_argument("--limit", type=_positive_int, default=100)
    return parser


def with_embedded_key_encryption_keys(config: Config, overrides: dict[str, str | None]) -> Config:
    """`config`, with the embedded database's KEK file when it runs one and no KEK is
    configured: generated once, kept beside (not in) the database. Set in `overrides`
    as a flag, so the supervisor's workers are given it too."""
    if config.database_url is not None or config.configured_key_encryption_keys is not None:
        return config
    overrides["key_encryption_keys_file"] = str(ensure_key_encryption_keys_file(config.data_dir))
    return config_module.from_env(overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {s.name: getattr(args, s.name, None) for s in config_module.SETTINGS}
    try:
        config = config_module.from_env(overrides=overrides)
    except ConfigError as exc:
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    if args.command == "healthcheck":
        return _healthcheck(config)
    config = with_embedded_key_encryption_keys(config, overrides)
    is_supervisor = args.command == "serve" and args.worker is None and config.workers > 1
    if args.command == "serve":
        # Each client connection holds a descriptor; so does each worker, for its own.
        raise_open_files_limit()
    action: Action
    if args.command == "serve":
        action = _serve(args.worker)
    elif args.command == "migrate":
        action = _migrate
    elif args.command == "sweep":
        action = _sweep
    elif args.command == "keys":
        action = _rotate_keys if args.keys_command == "rotate" else _rewrap_keys
    elif args.command == "audit":
        action = _audit(args.user, args.limit)
    else:
        action = _create_user(args.email, args.display_name)
    try:
        with _database_url(config) as dsn:
            if is_supervisor:
                return asyncio.run(supervise(config, dsn, overrides))
            asyncio.run(action(config, dsn))
    except AuthError as exc:
        print(f"authsvc: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # the TLS files' contents, read as the server is built
        print(f"authsvc: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0
