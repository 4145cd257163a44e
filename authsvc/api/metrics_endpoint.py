"""/metrics on the HTTP port, for Prometheus (AUTHSVC_METRICS)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from authsvc.telemetry.metrics import exposition

__all__ = ["METRICS_PATH", "MetricsEndpoint"]

METRICS_PATH = "/metrics"


class MetricsEndpoint:
    """Answers a scrape. `refresh` first sets this process's gauges that are read rather
    than counted (pool, feed, key age); `shared_dir`: see `exposition`."""

    def __init__(self, *, refresh: Callable[[], None], shared_dir: Path | None) -> None:
        self._refresh = refresh
        self._shared_dir = shared_dir

    def routes(self) -> Sequence[web.RouteDef]:
        return (web.get(METRICS_PATH, self._metrics),)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._refresh()
        body, content_type = exposition(request.headers.get("Accept", ""), self._shared_dir)
        # content_type carries its charset: set the header whole, as aiohttp would split it.
        return web.Response(body=body, headers={"Content-Type": content_type})
