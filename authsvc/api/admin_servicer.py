"""AdminService: operators' calls, each admitted by the operator guard first, then mapped
from protobuf to a domain call and back. Every call is audited by the domain, in the
transaction of its change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from authsvc.api import convert, webhook_deliveries
from authsvc.api.factor_messages import (
    factor_type,
    parse_factor_id,
    set_factor_list,
)
from authsvc.api.interceptors import note_subject
from authsvc.api.lineage import lineage_response
from authsvc.api.metadata import IpNetwork, client_ip, user_agent
from authsvc.api.service_auth import OperatorGuard
from authsvc.api.session_filters import add_sampled, session_filter
from authsvc.core.errors import InvalidArgument
from authsvc.core.models import Account, AuditFilter, AuditRecord, Operator, RequestOrigin
from authsvc.domain.admin import AdminActions
from authsvc.domain.bulk_revocation import BulkRevocation
from authsvc.domain.devices import MAX_USER_AGENT
from authsvc.domain.erasure import AccountErasure
from authsvc.domain.factors import FactorService
from authsvc.domain.lineage import SessionLineages
from authsvc.domain.password_resets import PasswordResets
from authsvc.domain.webhook_deliveries import WebhookDeliveries
from authsvc.v1 import admin_service_pb2 as pb
from authsvc.v1 import admin_service_pb2_grpc as pb_grpc

__all__ = ["AdminServicer"]

Context = grpc.aio.ServicerContext


def user_message(account: Account) -> pb.User:
    """An account as AdminService answers with it."""
    message = pb.User(
        user_id=str(account.id),
        email=account.email,
        display_name=account.display_name,
        disabled_reason=account.disabled_reason,
        live_session_count=account.live_session_count,
        second_factor_required=account.second_factor_required,
        factor_types=[factor_type(kind) for kind in account.factor_kinds],
    )
    convert.set_timestamp(message.created_at, account.created_at)
    convert.set_timestamp(message.updated_at, account.updated_at)
    if account.disabled_at is not None:
        convert.set_timestamp(message.disabled_at, account.disabled_at)
    return message


def _audit_message(record: AuditRecord) -> pb.AuditEvent:
    event = record.event
    message = pb.AuditEvent(
        id=record.id,
        event_type=event.event,
        user_id="" if event.user_id is None else str(event.user_id),
        session_id="" if event.session_id is None else str(event.session_id),
        ip_address=event.origin.ip_address,
        user_agent=event.origin.user_agent,
    )
    convert.set_timestamp(message.occurred_at, event.occurred_at)
    message.detail.CopyFrom(convert.struct_of(event.detail))
    return message


def _audit_filter(request: pb.ListAuditEventsRequest) -> AuditFilter:
    return AuditFilter(
        user_id=convert.parse_user_id(request.user_id) if request.user_id else None,
        event_types=tuple(request.event_types),
        occurred_after=convert.optional_instant(
            request.occurred_after,
            present=request.HasField("occurred_after"),
            field="occurred_after",
        ),
        occurred_before=convert.optional_instant(
            request.occurred_before,
            present=request.HasField("occurred_before"),
            field="occurred_before",
        ),
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(
        self,
        *,
        guard: OperatorGuard,
        trusted_proxies: Sequence[IpNetwork],
        actions: AdminActions,
        resets: PasswordResets,
        erasure: AccountErasure,
        bulk: BulkRevocation,
        lineages: SessionLineages,
        webhooks: WebhookDeliveries,
        factors: FactorService,
    ) -> None:
        self._guard = guard
        self._trusted_proxies = tuple(trusted_proxies)
        self._actions = actions
        self._resets = resets
        self._erasure = erasure
        self._bulk = bulk
        self._lineages = lineages
        self._webhooks = webhooks
        self._factors = factors

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
        operator = self._operator(context)
        which = request.WhichOneof("user")
        if which == "user_id":
            account = await self._actions.get_user(
                operator, user_id=convert.parse_user_id(request.user_id)
            )
        elif which == "email":
            account = await self._actions.get_user(operator, email=request.email)
        else:
            raise InvalidArgument("user", "user_id or email is required")
        note_subject(account.id, "")
        return pb.GetUserResponse(user=user_message(account))

    async def ListUserSessions(
        self,
        request: pb.ListUserSessionsRequest,
        context: Context[pb.ListUserSessionsRequest, pb.ListUserSessionsResponse],
    ) -> pb.ListUserSessionsResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        size = convert.page_size(request.page_size)
        after = convert.decode_page_token(user_id, request.page_token)
        note_subject(user_id, "")
        page = await self._actions.list_user_sessions(
            operator, user_id, page_size=size, after=after
        )
        response = pb.ListUserSessionsResponse()
        for session in page.sessions:
            convert.add_session(response.sessions, session, current=None)
        if page.next_cursor is not None:
            response.next_page_token = convert.encode_page_token(user_id, page.next_cursor)
        return response

    async def RevokeUserSessions(
        self,
        request: pb.RevokeUserSessionsRequest,
        context: Context[pb.RevokeUserSessionsRequest, pb.RevokeUserSessionsResponse],
    ) -> pb.RevokeUserSessionsResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        note_subject(user_id, "")
        count = await self._actions.revoke_user_sessions(operator, user_id, request.reason)
        return pb.RevokeUserSessionsResponse(revoked_session_count=count)

    async def DisableUser(
        self,
        request: pb.DisableUserRequest,
        context: Context[pb.DisableUserRequest, pb.DisableUserResponse],
    ) -> pb.DisableUserResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        note_subject(user_id, "")
        account, count = await self._actions.disable_user(operator, user_id, request.reason)
        return pb.DisableUserResponse(user=user_message(account), revoked_session_count=count)

    async def EnableUser(
        self,
        request: pb.EnableUserRequest,
        context: Context[pb.EnableUserRequest, pb.EnableUserResponse],
    ) -> pb.EnableUserResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        note_subject(user_id, "")
        account = await self._actions.enable_user(operator, user_id)
        return pb.EnableUserResponse(user=user_message(account))

    async def DeleteUser(
        self,
        request: pb.DeleteUserRequest,
        context: Context[pb.DeleteUserRequest, pb.DeleteUserResponse],
    ) -> pb.DeleteUserResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        note_subject(user_id, "")
        count = await self._erasure.delete_user(user_id, reason=request.reason, operator=operator)
        return pb.DeleteUserResponse(revoked_session_count=count)

    async def ClearLoginThrottle(
        self,
        request: pb.ClearLoginThrottleRequest,
        context: Context[pb.ClearLoginThrottleRequest, pb.ClearLoginThrottleResponse],
    ) -> pb.ClearLoginThrottleResponse:
        operator = self._operator(context)
        which = request.WhichOneof("subject")
        if which == "email":
            await self._actions.clear_login_throttle(operator, email=request.email)
        elif which == "ip_address":
            await self._actions.clear_login_throttle(operator, ip_address=request.ip_address)
        else:
            raise InvalidArgument("subject", "email or ip_address is required")
        return pb.ClearLoginThrottleResponse()

    async def ListAuditEvents(
        self,
        request: pb.ListAuditEventsRequest,
        context: Context[pb.ListAuditEventsRequest, pb.ListAuditEventsResponse],
    ) -> pb.ListAuditEventsResponse:
        operator = self._operator(context)
        which = _audit_filter(request)
        size = convert.page_size(request.page_size)
        before_id = convert.decode_audit_page_token(which, request.page_token)
        page = await self._actions.list_audit_events(
            operator, which, page_size=size, before_id=before_id
        )
        response = pb.ListAuditEventsResponse(
            events=[_audit_message(record) for record in page.events]
        )
        if page.next_cursor is not None:
            response.next_page_token = convert.encode_audit_page_token(which, page.next_cursor)
        return response

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
        note_subject(issued.user_id, "")
        response = pb.CreatePasswordResetTokenResponse(
            reset_token=issued.token, user_id=str(issued.user_id)
        )
        convert.set_timestamp(response.expires_at, issued.expires_at)
        return response

    async def GetSession(
        self,
        request: pb.AdminServiceGetSessionRequest,
        context: Context[pb.AdminServiceGetSessionRequest, pb.AdminServiceGetSessionResponse],
    ) -> pb.AdminServiceGetSessionResponse:
        operator = self._operator(context)
        session_id = convert.parse_session_id(request.session_id)
        session, end = await self._actions.get_session(operator, session_id)
        note_subject(session.user_id, session.id)
        return pb.AdminServiceGetSessionResponse(
            session=convert.session_message(session, end, current=False)
        )

    async def GetSessionLineage(
        self,
        request: pb.GetSessionLineageRequest,
        context: Context[pb.GetSessionLineageRequest, pb.GetSessionLineageResponse],
    ) -> pb.GetSessionLineageResponse:
        operator = self._operator(context)
        session_id = convert.parse_session_id(request.session_id)
        lineage, end = await self._lineages.get_session_lineage(operator, session_id)
        note_subject(lineage.session.user_id, session_id)
        return lineage_response(lineage, end)

    async def RevokeSessions(
        self,
        request: pb.RevokeSessionsRequest,
        context: Context[pb.RevokeSessionsRequest, pb.RevokeSessionsResponse],
    ) -> pb.RevokeSessionsResponse:
        operator = self._operator(context)
        which = session_filter(request.filter)
        if not request.dry_run:
            count = await self._bulk.revoke(operator, which, request.reason)
            return pb.RevokeSessionsResponse(session_count=count)
        preview = await self._bulk.preview(operator, which, request.reason)
        response = pb.RevokeSessionsResponse(session_count=preview.session_count)
        for sampled in preview.sample:
            add_sampled(response, sampled)
        return response

    async def ListWebhookDeliveries(
        self,
        request: pb.ListWebhookDeliveriesRequest,
        context: Context[pb.ListWebhookDeliveriesRequest, pb.ListWebhookDeliveriesResponse],
    ) -> pb.ListWebhookDeliveriesResponse:
        operator = self._operator(context)
        state = webhook_deliveries.delivery_state(request.state)
        size = convert.page_size(request.page_size)
        after = convert.decode_delivery_page_token(state.value, request.page_token)
        page = await self._webhooks.list_deliveries(operator, state, page_size=size, after=after)
        response = pb.ListWebhookDeliveriesResponse(
            deliveries=[webhook_deliveries.delivery_message(d) for d in page.deliveries]
        )
        if page.next_cursor is not None:
            response.next_page_token = convert.encode_delivery_page_token(
                state.value, page.next_cursor
            )
        return response

    async def RetryWebhookDelivery(
        self,
        request: pb.RetryWebhookDeliveryRequest,
        context: Context[pb.RetryWebhookDeliveryRequest, pb.RetryWebhookDeliveryResponse],
    ) -> pb.RetryWebhookDeliveryResponse:
        operator = self._operator(context)
        delivery_id = webhook_deliveries.parse_delivery_id(request.delivery_id)
        delivery = await self._webhooks.retry(operator, delivery_id)
        return pb.RetryWebhookDeliveryResponse(
            delivery=webhook_deliveries.delivery_message(delivery)
        )

    # --- second factors --------------------------------------------------------

    async def ListUserFactors(
        self, request: pb.ListUserFactorsRequest, context: Context[Any, Any]
    ) -> pb.ListUserFactorsResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        note_subject(user_id, "")
        listed = await self._factors.list_user_factors(operator, user_id)
        response = pb.ListUserFactorsResponse()
        set_factor_list(response, listed)
        return response

    async def RemoveUserFactor(
        self, request: pb.RemoveUserFactorRequest, context: Context[Any, Any]
    ) -> pb.RemoveUserFactorResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        factor_id = parse_factor_id(request.factor_id)
        note_subject(user_id, "")
        count = await self._factors.remove_user_factor(
            operator, user_id, factor_id, reason=request.reason
        )
        return pb.RemoveUserFactorResponse(revoked_session_count=count)

    async def SetSecondFactorRequired(
        self, request: pb.SetSecondFactorRequiredRequest, context: Context[Any, Any]
    ) -> pb.SetSecondFactorRequiredResponse:
        operator = self._operator(context)
        user_id = convert.parse_user_id(request.user_id)
        note_subject(user_id, "")
        account = await self._factors.set_second_factor_required(
            operator, user_id, request.required
        )
        return pb.SetSecondFactorRequiredResponse(user=user_message(account))
