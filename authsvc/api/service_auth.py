"""Who may call the RPCs for internal services (WatchRevocations; ValidateToken and GetJwks
with AUTHSVC_REQUIRE_SERVICE_CREDENTIALS): a caller with a service key, or one whose mTLS
client certificate names an allow-listed identity. A user's access token is neither.

AdminService asks the same question, then one more: is that service on the operator
allow-list (AUTHSVC_OPERATORS)?
"""

from __future__ import annotations

import enum
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
from authsvc.core.errors import (
    OperatorCredentialsRequired,
    OperatorNotAllowed,
    ServiceCredentialsRequired,
)
from authsvc.core.models import Operator, RequestOrigin
from authsvc.service_keys import ServiceKeys

__all__ = [
    "MissingCredential",
    "OperatorGuard",
    "ServiceGuard",
    "ServiceIdentity",
    "certificate_identities",
]

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

_NO_OPERATOR_SENT = (
    "AdminService is for operators: send `authorization: Bearer <service key>` of a "
    "service named in AUTHSVC_OPERATORS, or connect with such a client certificate"
)
_USERS_CREDENTIAL_FOR_ADMIN = (
    "a user's access token is not an operator credential: send `authorization: Bearer "
    "<service key>` of a service named in AUTHSVC_OPERATORS"
)


class MissingCredential(enum.Enum):
    """Why a call carries no service credential."""

    NONE_SENT = enum.auto()
    USERS_TOKEN = enum.auto()
    UNKNOWN_KEY = enum.auto()


_SERVICE_REFUSALS = {
    MissingCredential.NONE_SENT: _NONE_SENT,
    MissingCredential.USERS_TOKEN: _USERS_CREDENTIAL,
    MissingCredential.UNKNOWN_KEY: _NOT_A_KEY,
}
_OPERATOR_REFUSALS = {
    MissingCredential.NONE_SENT: _NO_OPERATOR_SENT,
    MissingCredential.USERS_TOKEN: _USERS_CREDENTIAL_FOR_ADMIN,
    MissingCredential.UNKNOWN_KEY: _NOT_A_KEY,
}


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
        identity = self.identify(context)
        if isinstance(identity, MissingCredential):
            raise ServiceCredentialsRequired(_SERVICE_REFUSALS[identity])
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

    def identify(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        *,
        prefer: Collection[str] = (),
    ) -> ServiceIdentity | MissingCredential:
        """The calling service, or why there is none. A certificate naming several
        allow-listed identities is the first of those in `prefer`, else the first by name."""
        if self._identities:
            for pem in context.auth_context().get("x509_pem_cert", ()):
                allowed = sorted(
                    certificate_identities(pem) & self._identities,
                    key=lambda name: (name not in prefer, name),
                )
                if allowed:
                    return ServiceIdentity(name=allowed[0], via="client_certificate")
        header = metadata_value(context, "authorization")
        if header is None:
            return MissingCredential.NONE_SENT
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        # Hashed whatever its shape: a malformed key is refused like an unknown one.
        name = self._keys.identify(token)
        if name is not None and scheme.lower() == "bearer":
            return ServiceIdentity(name=name, via="service_key")
        return (
            MissingCredential.USERS_TOKEN
            if _looks_like_jwt(token)
            else MissingCredential.UNKNOWN_KEY
        )


class OperatorGuard:
    """Admits the services on the operator allow-list. No credential, an unknown key or a
    user's token: OPERATOR_CREDENTIALS_REQUIRED; a known service not on the list:
    OPERATOR_NOT_ALLOWED. A refusal costs what ServiceGuard's does."""

    __slots__ = ("_operators", "_services")

    def __init__(self, services: ServiceGuard, operators: Collection[str]) -> None:
        self._services = services
        self._operators = frozenset(operators)

    def require(
        self, context: grpc.aio.ServicerContext[Any, Any], origin: RequestOrigin
    ) -> Operator:
        """The calling operator, named in the call's access-log line (a refused known
        service is named too); raises OperatorCredentialsRequired or OperatorNotAllowed."""
        identity = self._services.identify(context, prefer=self._operators)
        if isinstance(identity, MissingCredential):
            raise OperatorCredentialsRequired(_OPERATOR_REFUSALS[identity])
        note_service(identity.name)
        if identity.name not in self._operators:
            raise OperatorNotAllowed(
                f"service {identity.name!r} is not an operator: AUTHSVC_OPERATORS does not name it"
            )
        return Operator(name=identity.name, via=identity.via, origin=origin)
