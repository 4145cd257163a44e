"""An OTLP/gRPC collector that accepts every span and keeps none: what the bench points
authsvc's AUTHSVC_OTLP_ENDPOINT at, so a traced server pays the whole cost of tracing
(spans made, batched, encoded and sent over a socket) and nothing of a real collector's.

Run: python -m bench.otlp_sink; prints its port like the servers, and on SIGTERM the
number of spans it received (proof the traced server exported).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["received_spans"]

_RECEIVED = "bench OTLP sink: received "
_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def received_spans(log: str) -> int | None:
    """The span count the sink's log ends with, once it has stopped."""
    for line in reversed(log.splitlines()):
        if line.startswith(_RECEIVED):
            return int(line[len(_RECEIVED) :].split()[0])
    return None


class _Sink:
    def __init__(self) -> None:
        self.spans = 0

    async def export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        for resource in request.resource_spans:
            self.spans += sum(len(scope.spans) for scope in resource.scope_spans)
        return ExportTraceServiceResponse()


async def _serve() -> None:
    server = grpc.aio.server()
    sink = _Sink()
    export = grpc.unary_unary_rpc_method_handler(
        sink.export,
        request_deserializer=ExportTraceServiceRequest.FromString,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE, {"Export": export}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"bench OTLP sink: serving gRPC on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(None)
    print(f"{_RECEIVED}{sink.spans} spans", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(_serve())
