"""BearerAuthInterceptor: a TokenManager's access token on every call of a grpc.aio channel."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import grpc

from authsvc_client._errors import AuthsvcError, SessionExpired, TokenExpired, error_from_rpc
from authsvc_client._manager import TokenManager

__all__ = ["BearerAuthInterceptor"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

_AUTHORIZATION = "authorization"


def _has_authorization(details: grpc.aio.ClientCallDetails) -> bool:
    return details.metadata is not None and details.metadata.get(_AUTHORIZATION) is not None


def _with_bearer(
    details: grpc.aio.ClientCallDetails, access_token: str | None
) -> grpc.aio.ClientCallDetails:
    if access_token is None:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(_AUTHORIZATION, f"Bearer {access_token}")
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class BearerAuthInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <access token>` from `tokens` to every call of a channel.

    Works for stubs of any service: `grpc.aio.insecure_channel(target,
    interceptors=[BearerAuthInterceptor(client.tokens)])`. The token is refreshed before it
    expires; a unary call rejected with TOKEN_EXPIRED is retried once with a refreshed token
    (streaming calls are not replayed). A call that already carries `authorization` metadata
    is left alone. Once the session has ended, calls raise SessionExpired before anything is
    sent.
    """

    def __init__(self, tokens: TokenManager) -> None:
        self._tokens = tokens

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Req], Awaitable[grpc.aio.UnaryUnaryCall[_Req, _Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> _Resp | grpc.aio.UnaryUnaryCall[_Req, _Resp]:
        if _has_authorization(client_call_details):
            return await continuation(client_call_details, request)
        token = await self._tokens.access_token()
        call = await continuation(_with_bearer(client_call_details, token), request)
        if token is None or not isinstance(await self._failure(call, token), TokenExpired):
            return call
        renewed = await self._tokens.renew(token)
        retried = await continuation(_with_bearer(client_call_details, renewed), request)
        await self._failure(retried, renewed)
        return retried

    async def _failure(
        self, call: grpc.aio.UnaryUnaryCall[_Req, _Resp], token: str
    ) -> AuthsvcError | None:
        """How `call` failed, if it did; a session that ended is reported to the manager."""
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            error = error_from_rpc(exc)
            if isinstance(error, SessionExpired):
                await self._tokens.end_session(token, error)
            return error
        return None

    async def intercept_unary_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Req], Awaitable[grpc.aio.UnaryStreamCall[_Req, _Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> AsyncIterator[_Resp] | grpc.aio.UnaryStreamCall[_Req, _Resp]:
        return await continuation(await self._authorized(client_call_details), request)

    async def intercept_stream_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_Req] | Iterable[_Req]],
            Awaitable[grpc.aio.StreamUnaryCall[_Req, _Resp]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_Req] | Iterable[_Req],
    ) -> _Resp | grpc.aio.StreamUnaryCall[_Req, _Resp]:
        return await continuation(await self._authorized(client_call_details), request_iterator)

    async def intercept_stream_stream(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, AsyncIterable[_Req] | Iterable[_Req]],
            Awaitable[grpc.aio.StreamStreamCall[_Req, _Resp]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: AsyncIterable[_Req] | Iterable[_Req],
    ) -> AsyncIterator[_Resp] | grpc.aio.StreamStreamCall[_Req, _Resp]:
        return await continuation(await self._authorized(client_call_details), request_iterator)

    async def _authorized(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if _has_authorization(details):
            return details
        return _with_bearer(details, await self._tokens.access_token())
