"""AuthService's passkey (WebAuthn) RPCs."""

from __future__ import annotations

from typing import Any

import grpc

from authsvc.api.caller import Caller, Context
from authsvc.v1 import auth_service_pb2 as pb

__all__ = ["PasskeyRpcs"]


class PasskeyRpcs:
    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def BeginPasskeyRegistration(
        self, request: pb.BeginPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.BeginPasskeyRegistrationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def FinishPasskeyRegistration(
        self, request: pb.FinishPasskeyRegistrationRequest, context: Context[Any, Any]
    ) -> pb.FinishPasskeyRegistrationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def BeginPasskeyAssertion(
        self, request: pb.BeginPasskeyAssertionRequest, context: Context[Any, Any]
    ) -> pb.BeginPasskeyAssertionResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def PasskeyLogin(
        self, request: pb.PasskeyLoginRequest, context: Context[Any, Any]
    ) -> pb.PasskeyLoginResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")
