"""Traces: a call's server span, its database spans under it, the request id and the
trace id joining logs and traces, the caller's trace continued; none with tracing off."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from authsvc.app import AuthServer
from authsvc.config import Config
from authsvc.domain.refresh_tokens import hash_refresh_token
from authsvc.log_format import JsonFormatter
from authsvc.store.pool import Pool
from authsvc.telemetry.tracing import REQUEST_ID_ATTRIBUTE, Tracing
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.helpers import register

pytestmark = pytest.mark.asyncio

REFRESH = "authsvc.v1.AuthService/Refresh"
CALLERS_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLERS_SPAN = 0x00F067AA0BA902B7


@dataclass(frozen=True, slots=True)
class Traced:
    tracing: Tracing
    exporter: InMemorySpanExporter


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Tracing as production sets it up, its spans kept in memory; closed after the test."""
    exporter = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exporter))
    yield Traced(tracing, exporter)
    tracing.close()


async def _refreshed(
    start_server: Callable[..., Any],
    config: Config,
    traced: Traced,
    *,
    server_traced: bool = True,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[ReadableSpan, ...]:
    """The spans one Refresh made on a server started with (or without) tracing."""
    exporter = traced.exporter
    server: AuthServer = await start_server(
        config, tracing=traced.tracing if server_traced else None
    )
    await server.wait_ready()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        tokens = await register(stub)
        exporter.clear()
        await stub.Refresh(pb.RefreshRequest(refresh_token=tokens.refresh_token), metadata=metadata)
    return exporter.get_finished_spans()


def _server_span(spans: tuple[ReadableSpan, ...]) -> ReadableSpan:
    (server,) = (span for span in spans if span.kind is SpanKind.SERVER)
    return server


async def test_refresh_makes_a_server_span_with_its_database_spans_under_it(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    spans = await _refreshed(start_server, config, traced)

    server = _server_span(spans)
    assert server.name == REFRESH
    assert server.context is not None
    database = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert database
    for span in database:
        assert span.attributes is not None
        assert span.attributes["db.system"] == "postgresql"
        assert span.context is not None
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id


async def test_database_spans_carry_the_sql_but_never_its_parameters(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    # A Refresh's statement takes the token's hash: a collector must never receive it.
    server: AuthServer = await start_server(config, tracing=traced.tracing)
    await server.wait_ready()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        tokens = await register(stub)
        traced.exporter.clear()
        await stub.Refresh(pb.RefreshRequest(refresh_token=tokens.refresh_token))
    token_hash = hash_refresh_token(tokens.refresh_token)

    attributes = [
        (key, str(value))
        for span in traced.exporter.get_finished_spans()
        for key, value in (span.attributes or {}).items()
    ]
    assert any(key == "db.statement" for key, _ in attributes), attributes
    for key, value in attributes:
        assert "param" not in key, key
        assert token_hash.hex() not in value, key
        assert repr(token_hash) not in value, key


async def test_server_span_carries_the_calls_request_id(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    spans = await _refreshed(
        start_server, config, traced, metadata=(("x-request-id", "req-trace-join"),)
    )

    attributes = _server_span(spans).attributes
    assert attributes is not None
    assert attributes[REQUEST_ID_ATTRIBUTE] == "req-trace-join"


async def test_access_log_line_carries_the_calls_trace_id(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("authsvc.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        spans = await _refreshed(start_server, config, traced)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)

    refresh_lines = [
        entry
        for entry in map(json.loads, lines.getvalue().splitlines())
        if entry.get("rpc") == "/" + REFRESH
    ]
    server = _server_span(spans)
    assert server.context is not None
    assert [entry["trace_id"] for entry in refresh_lines] == [
        format_trace_id(server.context.trace_id)
    ]


async def test_incoming_traceparent_continues_the_callers_trace(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    traceparent = f"00-{format_trace_id(CALLERS_TRACE)}-{format_span_id(CALLERS_SPAN)}-01"

    spans = await _refreshed(start_server, config, traced, metadata=(("traceparent", traceparent),))

    server = _server_span(spans)
    assert server.context is not None
    assert server.context.trace_id == CALLERS_TRACE
    assert server.parent is not None
    assert server.parent.span_id == CALLERS_SPAN
    assert server.parent.is_remote


async def test_server_without_tracing_makes_no_spans(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    spans = await _refreshed(start_server, config, traced, server_traced=False)

    assert spans == ()


async def test_database_statements_outside_a_call_start_no_trace(
    pool: Pool, traced: Traced
) -> None:
    # As the health probe, the revocation feed and the sweeper query: on no call's behalf.
    await pool.fetchval("SELECT 1")

    assert traced.exporter.get_finished_spans() == ()


async def test_spans_name_the_service_as_otel_service_name_says(
    start_server: Callable[..., Any], config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "auth-eu")
    exporter = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exporter))
    try:
        spans = await _refreshed(start_server, config, Traced(tracing, exporter))
    finally:
        tracing.close()

    assert _server_span(spans).resource.attributes["service.name"] == "auth-eu"


async def test_spans_name_the_service_authsvc_by_default(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    spans = await _refreshed(start_server, config, traced)

    assert _server_span(spans).resource.attributes["service.name"] == "authsvc"


async def test_a_streaming_call_answers_under_tracing_as_one_server_span(
    start_server: Callable[..., Any], config: Config, traced: Traced
) -> None:
    server: AuthServer = await start_server(config, tracing=traced.tracing)
    await server.wait_ready()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = [
            service.name
            async for response in call
            for service in response.list_services_response.service
        ]

    assert "authsvc.v1.AuthService" in names
    assert [span.name for span in traced.exporter.get_finished_spans()] == [
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    ]
