"""Who may call the RPCs for internal services (WatchRevocations; ValidateToken and GetJwks
with AUTHSVC_REQUIRE_SERVICE_CREDENTIALS): a caller with a service key, or one whose mTLS
client certificate names an allow-listed identity. A user's access token is neither.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from authsvc.api.errors import status_for
from authsvc.api.interceptors import note_service
from authsvc.api.metadata import metadata_value
from authsvc.core.errors import ServiceCredentialsRequired
from authsvc.service_keys import ServiceKeys

__all__ = ["ServiceGuard", "ServiceIdentity", "certificate_identities"]

_log = logging.getLogger(__name__)

_NONE_SENT = (
    "this RPC is for internal services: send `authorization: Bearer <service key>` or "
    "connect with an allow-listed client certificate"
)
_USERS_CREDENTIAL = (
    "a user's access token is not a service credential: this RPC is for internal services; "
    "send `authorization: Bearer <service key>`"
)
_NOT_A_KEY = "service key not recognised"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceIdentity:
    """The calling service: a key's name, or the identity its client certificate carries."""

    name: str
    # "service_key" or "client_certificate".
    via: str


@functools.lru_cache(maxsize=256)
def certificate_identities(pem: bytes) -> frozenset[str]:
    """The URI SANs (SPIFFE IDs are URI SANs) and DNS SANs of a PEM certificate. Cached:
    a service presents the same certificate on every call of a connection."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return frozenset()
    return frozenset(
        [
            *sans.get_values_for_type(x509.UniformResourceIdentifier),
            *sans.get_values_for_type(x509.DNSName),
        ]
    )


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class ServiceGuard:
    """Admits service credentials, refuses everything else with SERVICE_CREDENTIALS_REQUIRED.

    A refusal costs one SHA-256 and a compare with each configured key, whatever was sent,
    so failed attempts are cheap and an unknown key looks like a malformed one.
    """

    __slots__ = ("_identities", "_keys")

    def __init__(self, keys: ServiceKeys, certificate_identities: Collection[str] = ()) -> None:
        self._keys = keys
        self._identities = frozenset(certificate_identities)

    def require(self, context: grpc.aio.ServicerContext[Any, Any]) -> ServiceIdentity:
        """The calling service, named in the call's access-log line; raises
        ServiceCredentialsRequired (which a unary handler lets the edge interceptor answer)."""
        identity = self._identify(context)
        note_service(identity.name)
        return identity

    async def require_on_stream(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ServiceIdentity:
        """The same for a streaming handler, which the edge interceptor does not wrap: a
        refusal ends the call here with its status and is logged (no access log covers it)."""
        try:
            return self.require(context)
        except ServiceCredentialsRequired as refused:
            _log.info(
                "service credentials refused",
                extra={
                    "event": "service_credentials_refused",
                    "peer": context.peer(),
                    "reason": "SERVICE_CREDENTIALS_REQUIRED",
                },
            )
            status = status_for(refused)
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise  # pragma: no cover (abort raises)

    def _identify(self, context: grpc.aio.ServicerContext[Any, Any]) -> ServiceIdentity:
        if self._identities:
            for pem in context.auth_context().get("x509_pem_cert", ()):
                allowed = sorted(certificate_identities(pem) & self._identities)
                if allowed:
                    return ServiceIdentity(name=allowed[0], via="client_certificate")
        header = metadata_value(context, "authorization")
        if header is None:
            raise ServiceCredentialsRequired(_NONE_SENT)
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        # Hashed whatever its shape: a malformed key is refused like an unknown one.
        name = self._keys.identify(token)
        if name is not None and scheme.lower() == "bearer":
            return ServiceIdentity(name=name, via="service_key")
        raise ServiceCredentialsRequired(
            _USERS_CREDENTIAL if _looks_like_jwt(token) else _NOT_A_KEY
        )
