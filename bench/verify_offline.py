"""verify_offline: the Python client's TokenVerifier, subscribed to authsvc's revocation
feed while revocations flow through it, verifying access tokens as fast as one process can.

It runs in a load process of its own (one core: the verifier is one event loop), so the
figure is verifies per second per core; `verifies_per_cpu_s` divides by the CPU time the
process used instead of the window, which is the same on an idle core and honest on a
busy one. A token refused for any reason (a stale feed included: the verifier refuses
then) is an error.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from authsvc_client import AuthClient, AuthsvcError, TokenVerifier, WhenStale

from authsvc.v1 import auth_service_pb2 as pb
from bench.load import Stub
from bench.report import quantile

__all__ = ["VerifySpec", "log_out_at", "run"]

# A bound on the feed's first heartbeat, not a figure.
_CURRENT_WITHIN = 30.0
# Verifies between yields to the event loop. A verify with cached keys never awaits, so a
# loop of nothing else would starve the feed's task (the verifier would go stale and refuse);
# a service's loop yields between requests, which this stands for.
_VERIFIES_PER_YIELD = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifySpec:
    target: str
    service_key: str = field(repr=False)
    access_tokens: list[str]
    start_at: float  # time.monotonic(), system-wide on Linux, as in bench.load
    warmup: float
    duration: float
    cpus: tuple[int, ...] = ()


def run(spec: VerifySpec) -> dict[str, Any]:
    """Entry point of the verifying process."""
    os.sched_setaffinity(0, spec.cpus or range(os.cpu_count() or 1))
    return asyncio.run(_run(spec))


async def _current(verifier: TokenVerifier) -> None:
    async with asyncio.timeout(_CURRENT_WITHIN):
        while not verifier.is_feed_current:  # noqa: ASYNC110 - the verifier has no event to await
            await asyncio.sleep(0.05)


@dataclass(slots=True)
class _Window:
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0

    @property
    def per_cpu_s(self) -> float | None:
        return len(self.latencies) / self.cpu_s if self.cpu_s else None


async def _verify_between(
    verifier: TokenVerifier, tokens: list[str], start: float, end: float
) -> _Window:
    """Verify `tokens` round and round until `end`, counting from `start` (monotonic)."""
    window = _Window()
    cpu_start = None
    index = 0
    while (now := time.monotonic()) < end:
        if cpu_start is None and now >= start:
            cpu_start = time.process_time()
        started = time.perf_counter()
        try:
            await verifier.verify(tokens[index % len(tokens)])
            code = "OK"
        except AuthsvcError as exc:
            code = type(exc).__name__
        if now >= start:
            window.latencies.append(time.perf_counter() - started)
            window.codes[code] += 1
        index += 1
        if index % _VERIFIES_PER_YIELD == 0:
            await asyncio.sleep(0)
    window.cpu_s = time.process_time() - (cpu_start or time.process_time())
    window.latencies.sort()
    return window


async def _run(spec: VerifySpec) -> dict[str, Any]:
    tokens = spec.access_tokens
    async with AuthClient.connect(spec.target, service_key=spec.service_key) as client:
        async with TokenVerifier(client, subscribe=True, when_stale=WhenStale.REFUSE) as verifier:
            await _current(verifier)
            await verifier.verify(tokens[0])  # the JWKS, fetched once
            await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
            start = spec.start_at + spec.warmup
            subscribed = await _verify_between(verifier, tokens, start, start + spec.duration)
            current_at_end = verifier.is_feed_current
        # The same checks unsubscribed (its feed task ended), right after: what subscribing
        # costs, the task's work included.
        plain = TokenVerifier(client)
        await plain.verify(tokens[0])
        start = time.monotonic() + spec.warmup
        unsubscribed = await _verify_between(plain, tokens, start, start + spec.duration)
    verifies = len(subscribed.latencies)
    errors = {code: n for code, n in sorted(subscribed.codes.items()) if code != "OK"}
    if not current_at_end:
        errors["feed not current at the end"] = 1
    both = (subscribed.per_cpu_s, unsubscribed.per_cpu_s)
    return {
        "verifies": verifies,
        "window_s": spec.duration,
        "verifies_per_s": verifies / spec.duration,
        "verifies_per_cpu_s": subscribed.per_cpu_s,
        "p50_us": quantile(subscribed.latencies, 0.50) * 1e6,
        "p99_us": quantile(subscribed.latencies, 0.99) * 1e6,
        "unsubscribed_verifies_per_cpu_s": unsubscribed.per_cpu_s,
        "unsubscribed_p50_us": quantile(unsubscribed.latencies, 0.50) * 1e6,
        # CPU per verify, subscribed minus not: the feed's task and the deny-list lookup.
        "subscription_cpu_us_per_verify": (
            (1 / both[0] - 1 / both[1]) * 1e6 if both[0] and both[1] else None
        ),
        "errors": errors,
        "error_count": sum(errors.values()),
    }


async def log_out_at(
    target: str, access_tokens: list[str], rate: float, *, until: asyncio.Future[Any]
) -> None:
    """Log the sessions of `access_tokens` out one by one, `rate` per second, until `until`
    is done: revocations for the feed to carry while the verifier works."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = Stub(channel)
        started = time.monotonic()
        for index, token in enumerate(access_tokens):
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            if until.done():
                return
            await stub.Logout(
                pb.LogoutRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=60
            )
