"""Who is calling, from a call's metadata: its device, its origin, its session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from authsvc.api.interceptors import note_subject
from authsvc.api.metadata import IpNetwork, bearer_token, client_ip, user_agent
from authsvc.core.models import DeviceInfo, Principal, RequestOrigin
from authsvc.domain import validation
from authsvc.domain.devices import MAX_USER_AGENT, describe_device
from authsvc.domain.sessions import SessionService

__all__ = ["Caller", "Context"]

Context = grpc.aio.ServicerContext


class Caller:
    """Reads the caller from a call; shared by every AuthService handler."""

    def __init__(self, sessions: SessionService, trusted_proxies: Sequence[IpNetwork]) -> None:
        self._sessions = sessions
        self._trusted_proxies = tuple(trusted_proxies)

    def device(self, context: Context[Any, Any], device_name: str) -> DeviceInfo:
        return describe_device(
            user_agent=user_agent(context),
            ip_address=client_ip(context, self._trusted_proxies),
            device_name=validation.clean_label(
                "device_name", device_name, max_length=validation.MAX_LABEL_LENGTH
            ),
        )

    def origin(self, context: Context[Any, Any]) -> RequestOrigin:
        return RequestOrigin(
            ip_address=client_ip(context, self._trusted_proxies),
            user_agent=user_agent(context)[:MAX_USER_AGENT],
        )

    async def authenticate(self, context: Context[Any, Any]) -> Principal:
        """The caller's access token's principal, its session live; noted for the logs."""
        principal = await self._sessions.authenticate(bearer_token(context))
        note_subject(principal.user_id, principal.session_id)
        return principal
