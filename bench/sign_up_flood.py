"""Does a flood of Register calls slow honest logins down?

Starts the real server (`python -m authsvc serve`, embedded PostgreSQL in a temporary
directory, default argon2id parameters) in its own process, then, in one run: honest
logins alone, then honest logins while N concurrent Register calls arrive, first from
one client address, then each from its own address (x-forwarded-for through a trusted
proxy, so the per-address limit does not stop them). Prints login latency and how the
Register calls were answered. Timing is printed, never asserted.

Run: .venv/bin/python -m bench.sign_up_flood [N ...]   (default: 48 400)
"""

from __future__ import annotations

import asyncio
import collections
import statistics
import sys
import tempfile
import time

import grpc

from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from bench.login_timing import Stub, start_server

EMAIL = "honest@example.com"
PASSWORD = "correct horse battery"
LOGINS = 20
DEADLINE = 15.0


async def _honest_logins(stub: Stub) -> tuple[list[float], collections.Counter[str]]:
    latencies: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    for _ in range(LOGINS):
        started = time.perf_counter()
        try:
            await stub.Login(pb.LoginRequest(email=EMAIL, password=PASSWORD), timeout=DEADLINE)
        except grpc.aio.AioRpcError as exc:
            failures[exc.code().name] += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, failures


async def _register(stub: Stub, number: int, address: str | None) -> str:
    metadata = (("x-forwarded-for", address),) if address else None
    try:
        await stub.Register(
            pb.RegisterRequest(email=f"flood{number}@example.com", password=PASSWORD),
            metadata=metadata,
            timeout=DEADLINE,
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "OK"


def _describe(name: str, latencies: list[float], failures: collections.Counter[str]) -> str:
    if len(latencies) < 2:
        return f"{name:>34}: {len(latencies)} ok, failed {dict(failures)}"
    q = statistics.quantiles(latencies, n=20)
    return (
        f"{name:>34}: login median {statistics.median(latencies):7.1f} ms   "
        f"p95 {q[-1]:7.1f} ms   max {max(latencies):7.1f} ms   "
        f"ok {len(latencies)}/{LOGINS}   failed {dict(failures) or 'none'}"
    )


async def _flood(stub: Stub, size: int, *, spread: bool) -> str:
    offset = size * (2 if spread else 1)  # fresh emails each flood
    registering = [
        asyncio.create_task(
            # Documentation addresses, one /64 each (a header value only: no traffic).
            _register(stub, offset + n, f"2001:db8:{n:x}::1" if spread else None)
        )
        for n in range(size)
    ]
    await asyncio.sleep(0.2)  # let the flood arrive first
    latencies, failures = await _honest_logins(stub)
    answers = collections.Counter(await asyncio.gather(*registering))
    where = "from as many addresses" if spread else "from one address"
    name = f"{size} Register calls {where}"
    return _describe(name, latencies, failures) + f"\n{'':>34}  Register answers {dict(answers)}"


async def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as data_dir:
        process, port = await start_server(
            data_dir,
            {"AUTHSVC_TRUSTED_PROXIES": "127.0.0.1/32", "AUTHSVC_SIGN_UPS_TOTAL": "1000000"},
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = auth_service_pb2_grpc.AuthServiceStub(channel)
                await channel.channel_ready()
                await stub.Register(pb.RegisterRequest(email=EMAIL, password=PASSWORD))
                print(_describe("no flood", *await _honest_logins(stub)))
                for size in sizes:
                    for spread in (False, True):
                        print(await _flood(stub, size, spread=spread))
        finally:
            process.terminate()
            await process.wait()


if __name__ == "__main__":
    asyncio.run(main([int(arg) for arg in sys.argv[1:]] or [48, 400]))
