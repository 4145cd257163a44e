"""AdminService: operators' calls, each admitted by the operator guard first, then mapped
from protobuf to a domain call and back. Every call is audited by the domain, in the
transaction of its change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from authsvc.api import convert
from authsvc.api.metadata import IpNetwork, client_ip, user_agent
from authsvc.api.service_auth import OperatorGuard
from authsvc.core.errors import InvalidArgument
from authsvc.core.models import Operator, RequestOrigin
from authsvc.domain import validation
from authsvc.domain.devices import MAX_USER_AGENT
from authsvc.domain.erasure import AccountErasure
from authsvc.domain.password_resets import PasswordResets
from authsvc.v1 import admin_service_pb2 as pb
from authsvc.v1 import admin_service_pb2_grpc as pb_grpc

__all__ = ["AdminServicer"]

Context = grpc.aio.ServicerContext


async def _not_built(context: Context[Any, Any], rpc: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not built yet")
    raise AssertionError  # pragma: no cover (abort raises)


# An operator's note (DeleteUser's reason): kept in the audit trail.
_MAX_OPERATOR_NOTE = 200


def _required_note(value: str) -> str:
    note = validation.clean_label("reason", value, max_length=_MAX_OPERATOR_NOTE)
    if not note:
        raise InvalidArgument("reason", "reason is required")
    return note


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(
        self,
        *,
        guard: OperatorGuard,
        trusted_proxies: Sequence[IpNetwork],
        resets: PasswordResets,
        erasure: AccountErasure,
    ) -> None:
        self._guard = guard
        self._trusted_proxies = tuple(trusted_proxies)
        self._resets = resets
        self._erasure = erasure

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
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        count = await self._erasure.delete_user(
            user_id, reason=_required_note(request.reason), operator=operator
        )
        return pb.DeleteUserResponse(revoked_session_count=count)

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
        operator = self._operator(context)
        which = request.WhichOneof("user")
        if which == "user_id":
            issued = await self._resets.create_token(
                user_id=convert.parse_user_id(request.user_id), operator=operator
            )
        elif which == "email":
            issued = await self._resets.create_token(email=request.email, operator=operator)
        else:
            raise InvalidArgument("user", "user_id or email is required")
        response = pb.CreatePasswordResetTokenResponse(
            reset_token=issued.token, user_id=str(issued.user_id)
        )
        convert.set_timestamp(response.expires_at, issued.expires_at)
        return response
