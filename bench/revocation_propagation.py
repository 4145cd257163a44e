"""revocation_propagation: from RevokeSession's OK on one replica to the first inactive
answer elsewhere (issue 12: p99 <= 50 ms on every replica, >= 1,000 revocations).

Three `authsvc serve` processes share one database. Every revoked session's access token
is polled without pause by one prober per place that must learn of the revocation (here
each other replica's ValidateToken); each prober reports when it first saw the session
inactive. A new kind of place (an offline verifier, say) is one more `Prober`.

Run on its own: .venv/bin/python -m bench.revocation_propagation [--revocations 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import argon2
import asyncpg
import grpc

from authsvc.embedded_db import start_embedded_postgres
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from bench.report import propagation, quantile
from bench.seed import SeededSession, Seeder
from bench.servers import ServerProcess, start_authsvc, wait_serving

if TYPE_CHECKING:
    Stub: TypeAlias = auth_service_pb2_grpc.AuthServiceAsyncStub
else:
    Stub = auth_service_pb2_grpc.AuthServiceStub

__all__ = ["Prober", "measure"]

REPLICAS = 3
SESSIONS_PER_USER = 10  # the first revokes the other nine
TARGET_P99_MS = 50.0
_PASSWORD = "bench password 1"


@dataclass(frozen=True, slots=True)
class Prober:
    """One place a revocation must reach: `first_inactive(session, started)` polls it until
    the session is refused, having set `started` once its first (active) answer came, and
    returns the perf_counter() of the refusal."""

    name: str
    first_inactive: Callable[[SeededSession, asyncio.Event], Coroutine[Any, Any, float]]


def validate_token_prober(name: str, stub: Stub) -> Prober:
    async def first_inactive(session: SeededSession, started: asyncio.Event) -> float:
        request = pb.ValidateTokenRequest(access_token=session.access_token)
        while True:
            response = await stub.ValidateToken(request, timeout=10)
            if not response.active:
                return time.perf_counter()
            started.set()

    return Prober(name, first_inactive)


async def _revoke_all(
    stub: Stub, users: Sequence[list[SeededSession]], probers: Sequence[Prober], lanes: int
) -> tuple[dict[str, list[float]], list[float]]:
    """Revoke each user's sessions but the first, through `stub`, `lanes` at a time; the
    delay (ms) to each prober's first inactive answer, and to the last prober's."""
    by_prober: dict[str, list[float]] = {prober.name: [] for prober in probers}
    to_all: list[float] = []
    work = [(user[0], session) for user in users for session in user[1:]]
    gate = asyncio.Semaphore(lanes)

    async def one(caller: SeededSession, session: SeededSession) -> None:
        async with gate:
            started = [asyncio.Event() for _ in probers]
            polls = [
                asyncio.create_task(prober.first_inactive(session, event))
                for prober, event in zip(probers, started, strict=True)
            ]
            await asyncio.gather(*(event.wait() for event in started))
            await stub.RevokeSession(
                pb.RevokeSessionRequest(session_id=str(session.session_id)),
                metadata=(("authorization", f"Bearer {caller.access_token}"),),
                timeout=10,
            )
            ok_at = time.perf_counter()
            seen = await asyncio.gather(*polls)
            # An answer can overtake the OK on its way back: that counts as no delay.
            delays = [max(0.0, (at - ok_at) * 1000) for at in seen]
            for prober, delay in zip(probers, delays, strict=True):
                by_prober[prober.name].append(delay)
            to_all.append(max(delays))

    await asyncio.gather(*(one(caller, session) for caller, session in work))
    return by_prober, to_all


def _figures(delays: list[float]) -> dict[str, float]:
    ordered = sorted(delays)
    return {
        "p50_ms": quantile(ordered, 0.50),
        "p99_ms": quantile(ordered, 0.99),
        "max_ms": ordered[-1],
        "count": len(ordered),
    }


async def measure(
    dsn: str, work_dir: Path, log_level: str, *, revocations: int = 1000, lanes: int = 4
) -> dict[str, Any]:
    """Start the replicas on `dsn`, revoke at least `revocations` sessions through the
    first, and report the delays; the replicas are stopped after."""
    replicas: list[ServerProcess] = []
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        for index in range(REPLICAS):
            replicas.append(start_authsvc(dsn, work_dir, log_level, name=f"replica-{index}"))
        for replica in replicas:
            await wait_serving(replica.target)
        seeder = Seeder(pool, replicas[0].target, argon2.PasswordHasher().hash(_PASSWORD))
        users = await seeder.users_with_sessions(
            math.ceil(revocations / (SESSIONS_PER_USER - 1)), SESSIONS_PER_USER
        )
        await seeder.mint_access_tokens([session for user in users for session in user])
        channels = [grpc.aio.insecure_channel(replica.target) for replica in replicas]
        try:
            stubs: list[Stub] = [Stub(channel) for channel in channels]
            probers = [
                validate_token_prober(f"replica {index} ValidateToken", stub)
                for index, stub in enumerate(stubs)
                if index > 0
            ]
            started = time.perf_counter()
            by_prober, to_all = await _revoke_all(stubs[0], users, probers, lanes)
            seconds = time.perf_counter() - started
        finally:
            for channel in channels:
                await channel.close()
    finally:
        for replica in replicas:
            replica.stop()
        await pool.close()
    return {
        "replicas": REPLICAS,
        "revocations": len(to_all),
        "lanes": lanes,
        "seconds": seconds,
        "target_p99_ms": TARGET_P99_MS,
        "every_replica": _figures(to_all),
        "by_prober": {name: _figures(delays) for name, delays in by_prober.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revocations", type=int, default=1000)
    parser.add_argument("--lanes", type=int, default=4, help="revocations in flight")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        work_dir = Path(tmp)
        embedded = None
        dsn = args.database_url
        if not dsn:
            embedded = start_embedded_postgres(work_dir / "pg")
            asyncio.run(embedded.ensure_service_database())
            dsn = embedded.dsn()
        try:
            figures = asyncio.run(
                measure(dsn, work_dir, "WARNING", revocations=args.revocations, lanes=args.lanes)
            )
        finally:
            if embedded is not None:
                embedded.stop()
    print(propagation(figures), file=sys.stderr)


if __name__ == "__main__":
    main()
