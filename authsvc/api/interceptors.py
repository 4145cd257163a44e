"""One interceptor for every unary call: request id, deadline, errors, access log.

Request and response messages are never logged: some carry passwords and tokens.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from authsvc.api.errors import deadline_exceeded_status, internal_status, reason_of, status_for
from authsvc.core.errors import AuthError, InvalidArgument, NotReady
from authsvc.log_format import REQUEST_ID, TRACE_ID
from authsvc.telemetry import metrics

__all__ = ["AccessLog", "EdgeInterceptor", "InFlight", "note_service", "note_subject"]

_log = logging.getLogger("authsvc.access")
_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Load balancers probe every few seconds: their lines would drown the calls at INFO.
_HEALTH_METHODS = "/grpc.health.v1.Health/"


class _Subject:
    """The user and session a call turned out to be about, and the internal service that
    made it, once the servicer knows."""

    __slots__ = ("service", "session_id", "user_id")

    def __init__(self) -> None:
        self.user_id = ""
        self.session_id = ""
        self.service = ""


_SUBJECT: contextvars.ContextVar[_Subject | None] = contextvars.ContextVar(
    "access_log_subject", default=None
)


def note_subject(user_id: object, session_id: object) -> None:
    """Name the user and session of the call in progress, for its access-log line."""
    subject = _SUBJECT.get()
    if subject is not None:
        subject.user_id, subject.session_id = str(user_id), str(session_id)


def note_service(name: str) -> None:
    """Name the internal service making the call in progress, for its access-log line."""
    subject = _SUBJECT.get()
    if subject is not None:
        subject.service = name


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# Request id -> the call's trace id, "" if it has none: joins logs and traces.
JoinTrace = Callable[[str], str]
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's x-request-id if it is a sane token, else a fresh one."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID_SHAPE.fullmatch(value):
            return value
    return uuid.uuid4().hex


class InFlight:
    """Counts unary calls in progress, so shutdown can tell when only streams are left."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class AccessLog:
    """One line per call, except calls refused for load (RESOURCE_EXHAUSTED: rate limited,
    server busy): at most one of those a minute per RPC and reason, carrying how many
    were left out before it, so a client hammering a limit cannot flood the log. (The
    refusals themselves are counted per client in the audit trail.)"""

    __slots__ = ("_left_out", "_logged_at")

    _REFUSED_EVERY = 60.0

    def __init__(self) -> None:
        self._logged_at: dict[tuple[str, str], float] = {}
        self._left_out: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(
        self,
        method: str,
        code: grpc.StatusCode,
        reason: str,
        started: float,
        *,
        peer: str,
        subject: _Subject,
    ) -> None:
        now = time.perf_counter()
        extra: dict[str, object] = {
            "event": "rpc",
            "rpc": method,
            "code": code.name,
            "reason": reason,
            "duration_ms": round((now - started) * 1000, 2),
            "peer": peer,
        }
        if subject.user_id:
            extra["user_id"] = subject.user_id
            extra["session_id"] = subject.session_id
        if subject.service:
            extra["service"] = subject.service
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            key = (method, reason)
            if now - self._logged_at.get(key, -self._REFUSED_EVERY) < self._REFUSED_EVERY:
                self._left_out[key] += 1
                return
            self._logged_at[key] = now
            extra["left_out"] = self._left_out.pop(key, 0)
        level = logging.DEBUG if method.startswith(_HEALTH_METHODS) else logging.INFO
        if _log.isEnabledFor(level):
            # The record straight to the handlers: Logger.log would first walk the stack
            # for a caller no format prints (a third of this line's cost).
            _log.handle(_log.makeRecord(_log.name, level, "", 0, "rpc", (), None, extra=extra))


class _RpcMetrics:
    """One method's children of the RPC metrics, bound once: a call then costs an observe
    and an increment, with no label lookup for the common answer (OK)."""

    __slots__ = ("_duration", "_handled", "_method", "_ok", "_service")

    def __init__(self, full_method: str) -> None:
        self._service, _, self._method = full_method.lstrip("/").rpartition("/")
        self._duration = metrics.RPC_DURATION.labels(self._service, self._method)
        self._ok = metrics.RPC_HANDLED.labels(self._service, self._method, "OK", "")
        self._handled: dict[tuple[grpc.StatusCode, str], Counter] = {}

    def record(self, code: grpc.StatusCode, reason: str, seconds: float) -> None:
        self._duration.observe(seconds)
        if code is grpc.StatusCode.OK:
            self._ok.inc()
            return
        # Bounded: the service's codes and reasons.
        handled = self._handled.get((code, reason))
        if handled is None:
            handled = metrics.RPC_HANDLED.labels(self._service, self._method, code.name, reason)
            self._handled[code, reason] = handled
        handled.inc()


async def _starting(_request: object, _context: grpc.aio.ServicerContext[Any, Any]) -> NoReturn:
    raise NotReady("the server is starting: its schema and keys are not ready yet")


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """`with_metrics`: count each call and its latency (authsvc_rpc_*).
    `join_trace`, with tracing on: called in the call's server span (the tracing
    interceptor comes first), it puts the request id on the span and returns the trace id
    that the call's log lines then carry. Until `started()` (migrations applied, keys
    loaded), every call but a health check is answered UNAVAILABLE NOT_READY: a call that
    reached a half-migrated schema would fail as INTERNAL."""

    def __init__(
        self,
        in_flight: InFlight,
        *,
        started: Callable[[], bool],
        with_metrics: bool = False,
        join_trace: JoinTrace | None = None,
    ) -> None:
        self._in_flight = in_flight
        self._started = started
        self._with_metrics = with_metrics
        self._join_trace = join_trace
        self._access = AccessLog()
        # Method name -> wrapped handler: grpc asks for every call, and the
        # servicer's handler for a method never changes.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None:
            return cast("grpc.RpcMethodHandler[_Req, _Resp]", known)
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        if not self._started() and not method.startswith(_HEALTH_METHODS):
            # Not kept: once started, the method gets its real handler.
            return cast(
                "grpc.RpcMethodHandler[_Req, _Resp]", self._edge(method, handler, _starting)
            )
        edge = self._edge(method, handler, cast(Handler, handler.unary_unary))
        self._wrapped[method] = edge
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", edge)

    def _edge(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any], behaviour: Handler
    ) -> grpc.RpcMethodHandler[Any, Any]:
        wrapped = _wrap(
            method,
            behaviour,
            handler.request_deserializer or _identity,
            self._in_flight,
            self._access,
            _RpcMetrics(method) if self._with_metrics else None,
            self._join_trace,
        )
        # The request arrives as bytes and is decoded inside the wrapper, so a
        # malformed message is an INVALID_ARGUMENT like any other bad input.
        return grpc.unary_unary_rpc_method_handler(
            wrapped, response_serializer=handler.response_serializer
        )


def _identity(raw: bytes) -> bytes:
    return raw


def _decode(deserialize: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        return deserialize(raw)
    except DecodeError as exc:
        raise InvalidArgument("request", "request is not a valid protobuf message") from exc


def _wrap(
    method: str,
    behaviour: Handler,
    deserialize: Callable[[bytes], Any],
    in_flight: InFlight,
    access: AccessLog,
    rpc_metrics: _RpcMetrics | None,
    join_trace: JoinTrace | None,
) -> Handler:
    async def call(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        # enter/leave rather than a context manager: this runs on every call.
        in_flight.enter()
        try:
            return await _serve(
                method, behaviour, deserialize, raw, context, access, rpc_metrics, join_trace
            )
        finally:
            in_flight.leave()

    return call


# How much sooner than the caller's deadline the service gives up on a call: enough to
# roll back and send DEADLINE_EXCEEDED (with its ErrorInfo) before the client's own
# deadline cancels the call a second time, which could interrupt a rollback.
_DEADLINE_MARGIN = 0.05
_DEADLINE_MARGIN_SHARE = 0.1


def _own_deadline(remaining: float | None) -> float | None:
    """Seconds the service works on a call: the caller's deadline, less a small margin."""
    if remaining is None:
        return None
    return max(remaining - min(_DEADLINE_MARGIN, remaining * _DEADLINE_MARGIN_SHARE), 0.0)


async def _answer(
    context: grpc.aio.ServicerContext[Any, Any],
    status: grpc.Status,
    echo: tuple[tuple[str, str], ...],
) -> NoReturn:
    """End the call with `status`. A call already over (its deadline passed, the client went
    away) cannot take a status any more: it ends as cancelled, quietly, instead of grpc
    logging the failed write as an error."""
    if context.done():
        raise asyncio.CancelledError
    await context.abort(status.code, status.details, (*status.trailing_metadata, *echo))


async def _serve(
    method: str,
    behaviour: Handler,
    deserialize: Callable[[bytes], Any],
    raw: bytes,
    context: grpc.aio.ServicerContext[Any, Any],
    access: AccessLog,
    rpc_metrics: _RpcMetrics | None,
    join_trace: JoinTrace | None,
) -> Any:
    request_id = _request_id(context)
    token = REQUEST_ID.set(request_id)
    trace_token = None if join_trace is None else TRACE_ID.set(join_trace(request_id))
    subject = _Subject()
    subject_token = _SUBJECT.set(subject)
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    reason = ""
    # The request id rides in the trailers: they go out with the status in the
    # same write, on every outcome, where initial metadata would cost a write
    # of its own (~10 % of a ValidateToken's server CPU).
    echo = (("x-request-id", request_id),)
    try:
        status: grpc.Status | None = None
        try:
            context.set_trailing_metadata(echo)
            async with asyncio.timeout(_own_deadline(context.time_remaining())):
                return await behaviour(_decode(deserialize, raw), context)
        except AuthError as exc:
            status = status_for(exc)
            code, reason = status.code, reason_of(exc)
        except TimeoutError:
            status = deadline_exceeded_status()
            code = status.code
        except (asyncio.CancelledError, grpc.aio.AbortError):
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            _log.exception("unhandled error", extra={"event": "rpc_error", "rpc": method})
            status = internal_status()
        finally:
            # Before an error answer leaves (a response leaves after this returns): whoever
            # has the answer can find its line in the log.
            access.record(method, code, reason, started, peer=context.peer(), subject=subject)
            if rpc_metrics is not None:
                rpc_metrics.record(code, reason, time.perf_counter() - started)
        await _answer(context, status, echo)
    finally:
        _SUBJECT.reset(subject_token)
        REQUEST_ID.reset(token)
        if trace_token is not None:
            TRACE_ID.reset(trace_token)
