"""A real HTTP endpoint for webhook deliveries: an aiohttp server on a free port that keeps
what it was sent and answers as the test says."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["Delivered", "Receiver"]


@dataclass(frozen=True, slots=True)
class Delivered:
    """One request as it arrived: headers and the raw body, as a verifier needs them."""

    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Listens on `port` between `start()` and `stop()`; refused connections otherwise.
    Answers `status`, once `held` is set if given."""

    port: int
    status: int = 204
    held: asyncio.Event | None = None
    received: list[Delivered] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._arrived:
            self.received.append(Delivered(dict(request.headers), body))
            self._arrived.notify_all()
        if self.held is not None:
            await self.held.wait()
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, *, within: float = 10.0) -> list[Delivered]:
        """The first `count` requests, once that many have arrived (a bound, not a timing
        assertion: TimeoutError if they never do)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received[:count]
