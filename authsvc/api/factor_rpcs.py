"""AuthService's second-factor RPCs: TOTP, recovery codes, listing and removal."""

from __future__ import annotations

from typing import Any

import grpc

from authsvc.api.caller import Caller, Context
from authsvc.v1 import auth_service_pb2 as pb

__all__ = ["FactorRpcs"]


class FactorRpcs:
    def __init__(self, caller: Caller) -> None:
        self._caller = caller

    async def ListFactors(
        self, request: pb.ListFactorsRequest, context: Context[Any, Any]
    ) -> pb.ListFactorsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def EnrolTotp(
        self, request: pb.EnrolTotpRequest, context: Context[Any, Any]
    ) -> pb.EnrolTotpResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def ConfirmTotp(
        self, request: pb.ConfirmTotpRequest, context: Context[Any, Any]
    ) -> pb.ConfirmTotpResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def RemoveFactor(
        self, request: pb.RemoveFactorRequest, context: Context[Any, Any]
    ) -> pb.RemoveFactorResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def RegenerateRecoveryCodes(
        self, request: pb.RegenerateRecoveryCodesRequest, context: Context[Any, Any]
    ) -> pb.RegenerateRecoveryCodesResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not built yet")
