"""AdminService: operators' calls, each admitted by the operator guard first, then mapped
from protobuf to a domain call and back. Every call is audited by the domain, in the
transaction of its change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from authsvc.api.metadata import IpNetwork, client_ip, user_agent
from authsvc.api.service_auth import OperatorGuard
from authsvc.core.models import Operator, RequestOrigin
from authsvc.domain.devices import MAX_USER_AGENT
from authsvc.v1 import admin_service_pb2 as pb
from authsvc.v1 import admin_service_pb2_grpc as pb_grpc

__all__ = ["AdminServicer"]

Context = grpc.aio.ServicerContext


async def _not_built(context: Context[Any, Any], rpc: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not built yet")
    raise AssertionError  # pragma: no cover (abort raises)


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, *, guard: OperatorGuard, trusted_proxies: Sequence[IpNetwork]) -> None:
        self._guard = guard
        self._trusted_proxies = tuple(trusted_proxies)

    def _operator(self, context: Context[Any, Any]) -> Operator:
        """The calling operator; refuses anyone else (the edge interceptor answers)."""
        return self._guard.require(
            context,
            RequestOrigin(
                ip_address=client_ip(context, self._trusted_proxies),
                user_agent=user_agent(context)[:MAX_USER_AGENT],
            ),
        )

    async def GetUser(
        self, request: pb.GetUserRequest, context: Context[pb.GetUserRequest, pb.GetUserResponse]
    ) -> pb.GetUserResponse:
        self._operator(context)
        await _not_built(context, "GetUser")

    async def ListUserSessions(
        self,
        request: pb.ListUserSessionsRequest,
        context: Context[pb.ListUserSessionsRequest, pb.ListUserSessionsResponse],
    ) -> pb.ListUserSessionsResponse:
        self._operator(context)
        await _not_built(context, "ListUserSessions")

    async def RevokeUserSessions(
        self,
        request: pb.RevokeUserSessionsRequest,
        context: Context[pb.RevokeUserSessionsRequest, pb.RevokeUserSessionsResponse],
    ) -> pb.RevokeUserSessionsResponse:
        self._operator(context)
        await _not_built(context, "RevokeUserSessions")

    # DisableUser and EnableUser: the `lifecycle` branch's.
    async def DisableUser(
        self,
        request: pb.DisableUserRequest,
        context: Context[pb.DisableUserRequest, pb.DisableUserResponse],
    ) -> pb.DisableUserResponse:
        self._operator(context)
        await _not_built(context, "DisableUser")

    async def EnableUser(
        self,
        request: pb.EnableUserRequest,
        context: Context[pb.EnableUserRequest, pb.EnableUserResponse],
    ) -> pb.EnableUserResponse:
        self._operator(context)
        await _not_built(context, "EnableUser")

    # DeleteUser and CreatePasswordResetToken: the `reset` branch's.
    async def DeleteUser(
        self,
        request: pb.DeleteUserRequest,
        context: Context[pb.DeleteUserRequest, pb.DeleteUserResponse],
    ) -> pb.DeleteUserResponse:
        self._operator(context)
        await _not_built(context, "DeleteUser")

    async def ClearLoginThrottle(
        self,
        request: pb.ClearLoginThrottleRequest,
        context: Context[pb.ClearLoginThrottleRequest, pb.ClearLoginThrottleResponse],
    ) -> pb.ClearLoginThrottleResponse:
        self._operator(context)
        await _not_built(context, "ClearLoginThrottle")

    async def ListAuditEvents(
        self,
        request: pb.ListAuditEventsRequest,
        context: Context[pb.ListAuditEventsRequest, pb.ListAuditEventsResponse],
    ) -> pb.ListAuditEventsResponse:
        self._operator(context)
        await _not_built(context, "ListAuditEvents")

    async def CreatePasswordResetToken(
        self,
        request: pb.CreatePasswordResetTokenRequest,
        context: Context[pb.CreatePasswordResetTokenRequest, pb.CreatePasswordResetTokenResponse],
    ) -> pb.CreatePasswordResetTokenResponse:
        self._operator(context)
        await _not_built(context, "CreatePasswordResetToken")
