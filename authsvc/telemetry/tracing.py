"""OpenTelemetry traces of one process: a server span per gRPC call, a client span per
database statement under it, exported over OTLP/gRPC.

Nothing here is imported, patched or wrapped unless tracing is on (AUTHSVC_OTLP_ENDPOINT):
the composition root builds a `Tracing` only then, and with none the server runs exactly
as without this module. Each server process (each worker of `serve --workers`) builds
its own, after it starts: a provider's export thread does not cross into another process.

The standard OTEL_* variables the SDK reads still apply: OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, and
OTEL_EXPORTER_OTLP_TRACES_{HEADERS,TIMEOUT,COMPRESSION,CERTIFICATE,...} (docs/operations.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, format_trace_id
from opentelemetry.util.types import Attributes

from authsvc import __version__

__all__ = ["REQUEST_ID_ATTRIBUTE", "Tracing", "otlp_tracing"]

# The service's own attribute: the request id the caller sent (x-request-id) or the edge made.
REQUEST_ID_ATTRIBUTE = "authsvc.request_id"
# Load balancers probe every few seconds: a trace each would drown the calls.
_UNTRACED_SERVICE = "grpc.health.v1.Health"


class Tracing:
    """One process's tracer provider, the gRPC server interceptor that starts each call's
    span, and asyncpg's instrumentation. `close()` flushes what is left and undoes the
    instrumentation."""

    def __init__(self, processor: SpanProcessor) -> None:
        provider = TracerProvider(resource=_resource())
        # Replaced before any tracer exists: tracers take the provider's sampler when made.
        provider.sampler = _InCallsOnly(provider.sampler)
        provider.add_span_processor(_ServerSpanNames())
        provider.add_span_processor(processor)
        self._provider = provider
        # The instrumentation packages are not annotated.
        # Never the parameters: they hold token hashes, emails and password hashes.
        self._asyncpg = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
        self._asyncpg.instrument(tracer_provider=provider)
        self.interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=provider,
            filter_=filters.negate(filters.service_name(_UNTRACED_SERVICE)),
        )

    @staticmethod
    def join_call(request_id: str) -> str:
        """Put the request id on the call's server span and return its trace id, for the
        call's log lines ("" outside a traced call)."""
        span = trace.get_current_span()
        context = span.get_span_context()
        if not context.is_valid:
            return ""
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
        return format_trace_id(context.trace_id)

    def close(self) -> None:
        self._asyncpg.uninstrument()
        self._provider.shutdown()


@contextmanager
def otlp_tracing(endpoint: str) -> Iterator[Tracing]:
    """Tracing exported in batches to an OTLP/gRPC collector at `endpoint` (http:// for
    plain text, https:// for TLS), closed (flushed) on exit."""
    tracing = Tracing(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    try:
        yield tracing
    finally:
        tracing.close()


def _resource() -> Resource:
    """The SDK's resource from OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, named
    `authsvc` where they name no service; the pid tells the workers of one `serve` apart,
    as it does in their log lines."""
    resource = Resource.create({SERVICE_VERSION: __version__, PROCESS_PID: os.getpid()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "authsvc"}))
    return resource


class _ServerSpanNames(SpanProcessor):
    """Server spans named as the semantic conventions and trace UIs expect,
    `package.Service/Method`: the instrumentation names them by the path, with its
    leading slash."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.kind is SpanKind.SERVER and span.name.startswith("/"):
            span.update_name(span.name[1:])


class _InCallsOnly(Sampler):
    """Database statements outside a call (the health probe every two seconds, the
    revocation feed, the sweeper) start no trace of their own: only calls are traced,
    each sampled by the configured sampler."""

    def __init__(self, within: Sampler) -> None:
        self._within = within

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._within.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"InCallsOnly{{{self._within.get_description()}}}"
