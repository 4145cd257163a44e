"""gRPC health: readiness and liveness, and a way to know that open Watch streams have
seen the latest status.

Readiness is the server ("") and each API service: NOT_SERVING while the database is
down or the process is stopping. Liveness is LIVENESS_SERVICE: SERVING while the process
runs and its event loop answers (it answers the check), whatever the database, so an
orchestrator restarting on liveness does not restart every replica during an outage. A
stop never tells it NOT_SERVING: a draining process is not a hung one (and a Check sent
once the server stops accepting calls is refused at the transport anyway).

Stopping flips readiness to NOT_SERVING so that load balancers watching the stream
drain this replica, then cancels every call. Without waiting in between, a
watcher can see its stream cancelled before the NOT_SERVING it was meant to act
on has been written to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

__all__ = ["LIVENESS_SERVICE", "HealthServicer"]

LIVENESS_SERVICE = "authsvc.liveness"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _RecordingContext:
    """Passes writes through to the real context and remembers the last status sent."""

    def __init__(self, context: Any, written: asyncio.Condition, service: str) -> None:
        self._context = context
        self.service = service
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
    """Readiness is the caller's to set; liveness turns SERVING with `report_alive`, once."""

    def __init__(self) -> None:
        super().__init__()
        self._watchers: set[_RecordingContext] = set()
        self._written = asyncio.Condition()
        self._stopping = False
        self._readiness: set[str] = {""}

    async def report_alive(self) -> None:
        """Liveness SERVING from now on, for the life of the process."""
        await super().set(LIVENESS_SERVICE, _SERVING)

    async def set(self, service: str, status: int) -> None:
        """Set a readiness service's status; ignored once stopping, as the stock one does."""
        if self._stopping or service == LIVENESS_SERVICE:
            return
        self._readiness.add(service)
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """Readiness NOT_SERVING for good; liveness stays SERVING while the calls drain
        (the stock method would flip it too)."""
        # First: a database probe finishing meanwhile must not flip one back to SERVING.
        self._stopping = True
        for service in sorted(self._readiness):
            await super().set(service, _NOT_SERVING)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watcher = _RecordingContext(context, self._written, request.service)
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
        """Return once no open Watch stream of a readiness service was last told SERVING
        (or nothing yet). Liveness watchers are told SERVING to the end."""
        async with self._written:
            await self._written.wait_for(
                lambda: all(
                    w.last_sent not in (None, _SERVING)
                    for w in self._watchers
                    if w.service != LIVENESS_SERVICE
                )
            )
