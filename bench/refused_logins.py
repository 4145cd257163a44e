"""What does a client hammering a locked account cost the service?

Starts the real server (`python -m authsvc serve`, embedded PostgreSQL in a temporary
directory) in its own process, locks one account with wrong passwords, then sends Login
calls for it from CONCURRENCY tasks for SECONDS, all refused. Prints the refusals per
second, the audit rows they left and how many refusals those rows account for, and the
server's log lines about throttling. Timing is printed, never asserted.

Run: .venv/bin/python -m bench.refused_logins [SECONDS]   (default 10)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time

import grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from bench.login_timing import Stub, start_server

EMAIL = "locked@example.com"
PASSWORD = "correct horse battery"
CONCURRENCY = 16


async def _count_throttle_lines(stream: asyncio.StreamReader, counted: list[int]) -> None:
    # Drained to the end, so the server never blocks on a full pipe.
    while line := await stream.readline():
        if b"throttled" in line:
            counted[0] += 1


async def _hammer(stub: Stub, until: float) -> tuple[int, int]:
    calls = refused = 0
    while time.monotonic() < until:
        calls += 1
        try:
            await stub.Login(pb.LoginRequest(email=EMAIL, password=PASSWORD))
        except grpc.aio.AioRpcError as exc:
            refused += exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    return calls, refused


async def _audited_refusals(data_dir: str) -> tuple[int, int]:
    """(rows, refusals they account for) of rate-limited login_failed audit events."""
    env = {**os.environ, "AUTHSVC_DATA_DIR": data_dir, "AUTHSVC_LOG_LEVEL": "ERROR"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "authsvc", "audit", "--limit", "10000000",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    rows = refusals = 0
    for line in stdout.splitlines():
        event = json.loads(line)
        if event["event"] == "login_failed" and event["detail"].get("reason") == "rate_limited":
            rows += 1
            refusals += int(event["detail"].get("count", 1))
    return rows, refusals


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as data_dir:
        process, port = await start_server(data_dir, {"AUTHSVC_LOG_LEVEL": "INFO"})
        assert process.stderr is not None
        lines = [0]
        draining = asyncio.create_task(_count_throttle_lines(process.stderr, lines))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = auth_service_pb2_grpc.AuthServiceStub(channel)
                await channel.channel_ready()
                await stub.Register(pb.RegisterRequest(email=EMAIL, password=PASSWORD))
                for _ in range(5):
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.Login(pb.LoginRequest(email=EMAIL, password="not it"))
                lines[0] = 0
                until = time.monotonic() + seconds
                results = await asyncio.gather(*(_hammer(stub, until) for _ in range(CONCURRENCY)))
        finally:
            process.terminate()  # SIGTERM: the server writes what it still holds
            await process.wait()
            await draining
        calls = sum(c for c, _ in results)
        refused = sum(r for _, r in results)
        rows, accounted = await _audited_refusals(data_dir)
        print(
            f"{calls} Login calls in {seconds:.0f} s ({calls / seconds:.0f}/s), {refused} refused; "
            f"audit rows {rows} (for {accounted} refusals); throttle log lines {lines[0]}"
        )


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0))
