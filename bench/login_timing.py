"""Wrong password vs unknown email: does Login's answer time tell them apart?

Starts the real server (`python -m authsvc serve`, embedded PostgreSQL in a
temporary directory, default argon2id parameters) in its own process, then
alternates failing logins of both kinds from this process and prints the
latency distribution of each. Run: .venv/bin/python bench/login_timing.py [N]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc

if not __package__:  # run as a file (the docstring's way): the checkout holds `bench`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.servers import SERVE_ARGS, listening_port

if TYPE_CHECKING:
    Stub: TypeAlias = auth_service_pb2_grpc.AuthServiceAsyncStub
else:
    Stub = auth_service_pb2_grpc.AuthServiceStub


async def start_server(
    data_dir: str, settings: dict[str, str]
) -> tuple[asyncio.subprocess.Process, int]:
    """`authsvc serve` on a free port with the embedded database in `data_dir`."""
    env = {**os.environ, "AUTHSVC_DATA_DIR": data_dir, "AUTHSVC_LOG_LEVEL": "WARNING", **settings}
    env.pop("AUTHSVC_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, *SERVE_ARGS, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    while line := await process.stderr.readline():
        if (port := listening_port(line.decode(errors="replace"))) is not None:
            return process, port
    raise RuntimeError("server exited before it listened")


async def _timed_failure(stub: Stub, email: str) -> float:
    started = time.perf_counter()
    try:
        await stub.Login(pb.LoginRequest(email=email, password="not the password"))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise
    else:
        raise RuntimeError("login unexpectedly succeeded")
    return (time.perf_counter() - started) * 1000


def _describe(name: str, samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=10)
    return (
        f"{name:>15}: median {statistics.median(samples):7.1f} ms   p10 {q[0]:7.1f}   "
        f"p90 {q[-1]:7.1f}   n={len(samples)}"
    )


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as data_dir:
        process, port = await start_server(
            data_dir,
            {
                # Every failure here is deliberate: the throttle would answer first.
                "AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT_AND_IP": "1000000",
                "AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
                "AUTHSVC_LOGIN_FAILURES_PER_IP": "1000000",
            },
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await channel.channel_ready()
                stub: Stub = Stub(channel)
                for _ in range(100):  # until migrated and SERVING
                    try:
                        await stub.Register(
                            pb.RegisterRequest(email="known@example.com", password="a password 1")
                        )
                        break
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        await asyncio.sleep(0.1)
                await _timed_failure(stub, "known@example.com")  # warm up
                known, unknown = [], []
                for i in range(rounds):
                    known.append(await _timed_failure(stub, "known@example.com"))
                    unknown.append(await _timed_failure(stub, f"nobody{i}@example.com"))
        finally:
            process.terminate()
            await process.wait()
    print(_describe("wrong password", known))
    print(_describe("unknown email", unknown))
    ratio = statistics.median(unknown) / statistics.median(known)
    print(f"median ratio unknown/wrong: {ratio:.3f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30))
