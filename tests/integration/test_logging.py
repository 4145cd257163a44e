"""What the log tells an operator: the access log's who and from where, which lines are
DEBUG-only noise, the ready line, and the format a person at a terminal gets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pty
import select
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import PASSWORD, Stub, bearer, register
from tests.processes import REPO_ROOT, WAIT, authsvc_env, eventually, server_group

pytestmark = pytest.mark.asyncio


def _access_line(caplog: pytest.LogCaptureFixture, rpc: str) -> logging.LogRecord:
    """The one access-log line of `rpc` (the record, before the formatter adds a request id)."""
    [record] = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "rpc" and getattr(r, "rpc", None) == rpc
    ]
    return record


async def test_access_log_names_the_peer_and_the_callers_user_and_session(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.access")
    session = await register(stub)

    await stub.ListSessions(
        pb.ListSessionsRequest(),
        metadata=bearer(session.access_token),
    )

    record = _access_line(caplog, "/authsvc.v1.AuthService/ListSessions")
    assert getattr(record, "peer", "").startswith("ipv4:127.0.0.1:")
    assert (getattr(record, "user_id", None), getattr(record, "session_id", None)) == (
        session.user_id,
        session.session_id,
    )


async def test_access_log_of_a_login_names_the_session_it_started(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.access")
    await stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))

    session = await stub.Login(pb.LoginRequest(email="alice@example.com", password=PASSWORD))

    record = _access_line(caplog, "/authsvc.v1.AuthService/Login")
    assert (getattr(record, "user_id", None), getattr(record, "session_id", None)) == (
        session.user_id,
        session.session_id,
    )


async def test_health_checks_are_logged_at_debug_only(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="authsvc.access")

    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))

    assert _access_line(caplog, "/grpc.health.v1.Health/Check").levelno == logging.DEBUG


async def test_ready_line_names_the_serving_address(pg_dsn: str) -> None:
    async with server_group() as group:
        server = await group.start_ready(pg_dsn)

        def ready_lines() -> list[dict[str, object]]:
            lines = (json.loads(x) for x in server.stderr_tail.splitlines() if x.startswith("{"))
            return [line for line in lines if line.get("event") == "ready"]

        async def logged_ready() -> bool:
            return bool(ready_lines())

        await eventually(logged_ready)

    assert ready_lines()[0]["address"] == f"127.0.0.1:{server.port}"


def _read_until(fd: int, needle: bytes) -> bytes:
    """What the terminal shows until a line containing `needle` (bounded by WAIT)."""
    seen = b""
    deadline = time.monotonic() + WAIT
    while needle not in seen.rpartition(b"\n")[0]:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no {needle!r} line within {WAIT}s:\n{seen.decode()}")
        try:
            seen += os.read(fd, 4096)
        except OSError:  # EIO: the process closed the terminal (it exited)
            raise AssertionError(f"exited before a {needle!r} line:\n{seen.decode()}") from None
    return seen


def _serve_on_a_terminal(dsn: str) -> str:
    """`authsvc serve` with its stderr on a pseudo-terminal, until its ready line."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "authsvc", "serve", "--host=127.0.0.1", "--port=0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        env=authsvc_env(dsn),
        cwd=REPO_ROOT,
    )
    os.close(terminal)
    try:
        return _read_until(controller, b"ready").decode()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        os.close(controller)


async def test_log_on_a_terminal_is_text_with_the_ready_address(pg_dsn: str) -> None:
    shown = await asyncio.to_thread(_serve_on_a_terminal, pg_dsn)

    [ready] = [line for line in shown.splitlines() if " ready" in line]
    assert not ready.startswith("{")
    assert "INFO" in ready
    assert "address=127.0.0.1:" in ready
