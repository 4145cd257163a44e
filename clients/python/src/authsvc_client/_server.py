"""TokenAuthInterceptor: authenticate every call of a grpc.aio server with a TokenVerifier."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc_client._errors import (
    DOMAIN,
    AuthsvcError,
    StepUpRequired,
    Unauthenticated,
    error_for,
)
from authsvc_client._models import AssuranceLevel, Principal
from authsvc_client._verifier import TokenVerifier
from authsvc_client.v1.error_reason_pb2 import ErrorReason

__all__ = ["TokenAuthInterceptor", "current_principal"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "authsvc_client_principal", default=None
)

_Context = grpc.aio.ServicerContext[Any, Any]


def current_principal() -> Principal:
    """Who the current call is authenticated as, inside a handler behind TokenAuthInterceptor.

    Raises LookupError anywhere else (including in public methods).
    """
    principal = _PRINCIPAL.get()
    if principal is None:
        raise LookupError("no principal: not inside a call authenticated by TokenAuthInterceptor")
    return principal


def _status_of(error: AuthsvcError) -> grpc.Status:
    """The refusal to send: the verifier's code and reason; for anything but a verdict on the
    token (authsvc unreachable, say), a generic message, so no internal detail leaks."""
    message = (
        error.message
        if isinstance(error, Unauthenticated | StepUpRequired)
        else "authentication is unavailable; retry later"
    )
    details = []
    if error.reason:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
        details.append(detail)
    status = status_pb2.Status(code=error.code.value[0], message=message, details=details)
    return cast(grpc.Status, rpc_status.to_status(status))


def _authorization(context: _Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


_NO_BEARER = "authorization metadata with a Bearer token is required"
_NOT_BEARER = "authorization metadata must be 'Bearer <token>'"


def _bearer_token(header: str | None) -> str:
    if header is None:
        raise error_for(ErrorReason.MISSING_CREDENTIALS, _NO_BEARER)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise error_for(
            ErrorReason.TOKEN_INVALID, "authorization metadata must be 'Bearer <token>'"
        )
    if not token.strip():
        raise error_for(ErrorReason.MISSING_CREDENTIALS, _NO_BEARER)
    return token.strip()


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call reach its handler only with a valid `authorization: Bearer` access token.

    Works for every service on the server. The handler reads the caller with
    `current_principal()`. A refused call ends with UNAUTHENTICATED and an ErrorInfo (domain
    "authsvc") whose reason is MISSING_CREDENTIALS, TOKEN_INVALID, TOKEN_EXPIRED, or, with an
    online or subscribed verifier, SESSION_REVOKED (online also SESSION_EXPIRED); UNAVAILABLE
    if the verifier cannot reach authsvc or refuses while its feed is stale.
    `public_methods` (full names, e.g. "/grpc.health.v1.Health/Check") pass through
    unauthenticated. `aal2_methods` (full names) need a token at AssuranceLevel.AAL2: one
    below is refused PERMISSION_DENIED with reason STEP_UP_REQUIRED, as authsvc refuses its
    own sensitive calls, so the user's app steps up and calls again. Handlers must be
    coroutine functions or async generators, as grpc.aio servers run them.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        public_methods: Collection[str] = (),
        aal2_methods: Collection[str] = (),
    ) -> None:
        self._verifier = verifier
        self._public_methods = frozenset(public_methods)
        self._aal2_methods = frozenset(aal2_methods)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._public_methods:
            return handler
        method = handler_call_details.method
        minimum = AssuranceLevel.AAL2 if method in self._aal2_methods else None
        return cast("grpc.RpcMethodHandler[_Req, _Resp]", self._guard(handler, minimum))

    async def _authenticate(self, context: _Context, minimum: AssuranceLevel | None) -> Principal:
        try:
            token = _bearer_token(_authorization(context))
            principal = await self._verifier.verify(token, min_assurance=minimum)
        except AuthsvcError as exc:
            await context.abort_with_status(_status_of(exc))
        return principal

    def _guard(
        self, handler: grpc.RpcMethodHandler[Any, Any], minimum: AssuranceLevel | None
    ) -> grpc.RpcMethodHandler[Any, Any]:
        serializers: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_response(handler.unary_unary, minimum), **serializers
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary_response(handler.stream_unary, minimum), **serializers
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream_response(handler.unary_stream, minimum), **serializers
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_response(handler.stream_stream, minimum), **serializers
            )
        return handler

    def _unary_response(
        self, behaviour: Callable[..., Any], minimum: AssuranceLevel | None
    ) -> Callable[..., Any]:
        async def guarded(request: Any, context: _Context) -> Any:
            principal = await self._authenticate(context, minimum)
            token = _PRINCIPAL.set(principal)
            try:
                outcome = behaviour(request, context)
                return await outcome if inspect.isawaitable(outcome) else outcome
            finally:
                _PRINCIPAL.reset(token)

        return guarded

    def _stream_response(
        self, behaviour: Callable[..., Any], minimum: AssuranceLevel | None
    ) -> Callable[..., Any]:
        async def guarded(request: Any, context: _Context) -> AsyncIterator[Any]:
            principal = await self._authenticate(context, minimum)
            token = _PRINCIPAL.set(principal)
            try:
                outcome = behaviour(request, context)
                if hasattr(outcome, "__aiter__"):
                    async for item in outcome:
                        yield item
                elif inspect.isawaitable(outcome):
                    # A handler that writes with context.write() and returns nothing.
                    await outcome
                else:
                    for item in outcome:
                        yield item
            finally:
                # Each call runs in its own task; if the stream is finalised elsewhere the
                # task's context, and the principal with it, is gone anyway.
                with contextlib.suppress(ValueError):
                    _PRINCIPAL.reset(token)

        return guarded
