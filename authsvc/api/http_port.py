"""The HTTP port: a small aiohttp server on the gRPC server's event loop.

It serves the routes it is given (the JWKS and discovery today; metrics may join them)
on a socket the composition root has bound, over TLS when given a context. Anything else
is 404, another method on a known path 405. Requests are bounded in size and header
count, and a connection that does not deliver a whole request in time is closed, so a
slow or idle client cannot keep a descriptor for long.
"""

from __future__ import annotations

import logging
import socket
import ssl
import uuid
from collections.abc import Sequence
from datetime import timedelta

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from authsvc.api.metrics_endpoint import METRICS_PATH

__all__ = ["HttpPort"]

_log = logging.getLogger("authsvc.access")
_server_log = logging.getLogger("authsvc.http")

# Nothing here reads a body; the limits are for what arrives anyway.
_MAX_BODY_BYTES = 1024
_MAX_LINE_BYTES = 4096
_MAX_HEADER_BYTES = 4096
_MAX_HEADERS = 32
# The longest path an access-log line repeats.
_LOGGED_PATH = 200
# The product without its version (aiohttp would name itself and Python's version).
_SERVER = "authsvc"
# Prometheus scrapes every 15 s or so: its lines would drown the rest at INFO.
_QUIET_PATHS = frozenset({METRICS_PATH})


class _AccessLog(AbstractAccessLogger):
    """One line per request, with the keys of the gRPC access log where they match."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in _QUIET_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        extra: dict[str, object] = {
            "event": "http_request",
            "method": request.method,
            "path": request.path[:_LOGGED_PATH],
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "peer": request.remote,
        }
        request_id = response.headers.get(_REQUEST_ID)
        if request_id is not None:
            extra["request_id"] = request_id
        self.logger.log(level, "http", extra=extra)


class _NoParseErrors(logging.Filter):
    """aiohttp logs a malformed or oversized request at ERROR with its traceback: anyone
    could fill the log so. Its access-log line (status 400) says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], HttpProcessingError))


_server_log.addFilter(_NoParseErrors())

_REQUEST_ID = "X-Request-Id"


async def _stamp(request: web.Request, response: web.StreamResponse) -> None:
    """Name the answer in its access-log line, and hide the versions aiohttp would send."""
    response.headers[_REQUEST_ID] = uuid.uuid4().hex
    response.headers["Server"] = _SERVER


class HttpPort:
    """Serves `routes` on one bound socket until stopped.

    `read_timeout`: a connection that has not sent a whole request this long after it
    connected or got its last answer is closed.
    """

    def __init__(self, routes: Sequence[web.RouteDef], *, read_timeout: timedelta) -> None:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.add_routes(routes)
        app.on_response_prepare.append(_stamp)
        self._runner = web.AppRunner(
            app,
            access_log_class=_AccessLog,
            access_log=_log,
            logger=_server_log,
            # aiohttp starts this timer at the connection and again after each answer, and
            # closes the connection if no whole request has arrived when it fires.
            keepalive_timeout=read_timeout.total_seconds(),
            max_line_size=_MAX_LINE_BYTES,
            max_field_size=_MAX_HEADER_BYTES,
            max_headers=_MAX_HEADERS,
            # The handlers answer from memory at once: nothing in flight to wait for.
            shutdown_timeout=0,
        )

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        """Serve on `sock` (bound, not yet listening), over TLS if `tls` is given."""
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=tls).start()

    async def stop(self) -> None:
        """Close the socket and every connection (nothing to do if never started)."""
        if self._runner.server is not None:
            await self._runner.cleanup()
