"""gRPC health with a way to know that open Watch streams have seen the latest status.

Stopping flips health to NOT_SERVING so that load balancers watching the stream
drain this replica, then cancels every call. Without waiting in between, a
watcher can see its stream cancelled before the NOT_SERVING it was meant to act
on has been written to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

_SERVING = health_pb2.HealthCheckResponse.SERVING


class _RecordingContext:
    """Passes writes through to the real context and remembers the last status sent."""

    def __init__(self, context: Any, written: asyncio.Condition) -> None:
        self._context = context
        self._written = written
        self.last_sent: int | None = None

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(response)
        async with self._written:
            self.last_sent = response.status
            self._written.notify_all()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health ships no types
    def __init__(self) -> None:
        super().__init__()
        self._watchers: set[_RecordingContext] = set()
        self._written = asyncio.Condition()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watcher = _RecordingContext(context, self._written)
        self._watchers.add(watcher)
        try:
            await super().Watch(request, watcher)
        finally:
            self._watchers.discard(watcher)
            async with self._written:
                self._written.notify_all()

    async def List(self, request: health_pb2.HealthListRequest, context: Any) -> Any:
        """Every service's status (the stock servicer leaves List unimplemented)."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )

    async def wait_watchers_told_not_serving(self) -> None:
        """Return once no open Watch stream was last told SERVING (or nothing yet)."""
        async with self._written:
            await self._written.wait_for(
                lambda: all(w.last_sent not in (None, _SERVING) for w in self._watchers)
            )
