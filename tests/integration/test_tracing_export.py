"""`authsvc serve` with AUTHSVC_OTLP_ENDPOINT: each worker exports its calls' spans over
OTLP/gRPC, and sends what it holds before it exits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import register
from tests.processes import server_group

pytestmark = pytest.mark.asyncio


class Collector:
    """An OTLP/gRPC trace collector on a real socket that keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[ExportTraceServiceRequest] = []
        self.port = 0

    async def export(
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        self.received.append(request)
        return ExportTraceServiceResponse()

    def server_spans(self) -> list[tuple[str, int]]:
        """(name, exporting pid) of each server span received."""
        found = []
        for request in self.received:
            for resource in request.resource_spans:
                pid = next(
                    a.value.int_value
                    for a in resource.resource.attributes
                    if a.key == "process.pid"
                )
                for scope in resource.scope_spans:
                    found += [(span.name, pid) for span in scope.spans if span.kind == 2]
        return found


@pytest_asyncio.fixture
async def collector() -> AsyncIterator[Collector]:
    collector = Collector()
    server = grpc.aio.server()
    export = grpc.unary_unary_rpc_method_handler(
        collector.export,
        request_deserializer=ExportTraceServiceRequest.FromString,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": export}
            ),
        )
    )
    collector.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield collector
    await server.stop(None)


async def test_each_worker_exports_its_calls_spans_by_the_time_it_exits(
    pg_dsn: str, collector: Collector
) -> None:
    async with server_group() as group:
        server = await group.start_ready(
            pg_dsn,
            AUTHSVC_WORKERS="2",
            AUTHSVC_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.port}",
        )
        tokens = await register(server.stub)
        await server.stub.Refresh(pb.RefreshRequest(refresh_token=tokens.refresh_token))
        server.terminate()
        assert await server.wait() == 0

    refreshes = [pid for name, pid in collector.server_spans() if name.endswith("/Refresh")]
    assert len(refreshes) == 1
    assert refreshes[0] != server.process.pid
