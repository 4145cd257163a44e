"""The JWKS and the OpenID discovery document over HTTP, for gateways and JWT middleware.

The key set is GetJwks's, byte for byte (one source: `KeyRing.jwks_json()`). Caches may
keep either document for `KeyRing.jwks_max_age`, short enough that a rotated-in key is in
every cache before it signs; a strong ETag from the content lets them revalidate for a
304. Before the key ring is loaded both answer 503 with Retry-After: an empty key set
would tell verifiers that no token is valid. docs/operations.md says which discovery
fields are present and why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Sequence
from datetime import timedelta
from http import HTTPStatus

from aiohttp import web

from authsvc.core.errors import NotReady
from authsvc.domain.signing_keys import KeyRing

__all__ = ["DISCOVERY_PATH", "JWKS_PATH", "WellKnown"]

JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
# Seconds a client waits before asking again while the keys load (the start-up retries
# reach the database within a few).
_RETRY_AFTER = "1"
# A Host header a URL can be built from: a name or address, an optional port.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?")


def _is_url(text: str) -> bool:
    """Whether `text` is an http(s) URL, as OpenID discovery wants an issuer to be."""
    return text.startswith(("https://", "http://"))


class WellKnown:
    """The two documents, as aiohttp routes (GET, and HEAD with it).

    `public_url`: the base of `jwks_uri`. None: the issuer when it is a URL (discovery
    then works from the issuer alone), otherwise the scheme and Host of each request.
    """

    def __init__(self, keys: KeyRing, *, issuer: str, public_url: str | None) -> None:
        self._keys = keys
        self._issuer = issuer
        self._public_url = public_url or (issuer.rstrip("/") if _is_url(issuer) else None)
        self._cache_control = f"public, max-age={_whole_seconds(keys.jwks_max_age)}"

    def routes(self) -> Sequence[web.RouteDef]:
        return (web.get(JWKS_PATH, self._jwks), web.get(DISCOVERY_PATH, self._discovery))

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        try:
            jwks = self._keys.jwks_json()
        except NotReady:
            return _not_ready()
        return self._document(request, jwks)

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        try:
            jwks = self._keys.jwks_json()
        except NotReady:
            return _not_ready()
        base = self._public_url
        if base is None:
            if _HOST.fullmatch(request.host) is None:
                raise web.HTTPBadRequest(text="400: Bad Host header")
            base = f"{request.scheme}://{request.host}"
        # The algorithms of the published keys: each key is published before it signs, so
        # the list has every algorithm a token can carry, and no other.
        algorithms = sorted({key["alg"] for key in json.loads(jwks)["keys"]})
        document = {
            "issuer": self._issuer,
            "jwks_uri": base + JWKS_PATH,
            "id_token_signing_alg_values_supported": algorithms,
            "subject_types_supported": ["public"],
        }
        return self._document(request, json.dumps(document, separators=(",", ":")))

    def _document(self, request: web.Request, body: str) -> web.StreamResponse:
        encoded = body.encode()
        tag = base64.urlsafe_b64encode(hashlib.sha256(encoded).digest()[:18]).decode()
        headers = {"Cache-Control": self._cache_control, "ETag": f'"{tag}"'}
        # If-None-Match compares weakly (RFC 9110 13.1.2): W/"x" matches "x".
        if any(etag.value in (tag, "*") for etag in request.if_none_match or ()):
            return web.Response(status=HTTPStatus.NOT_MODIFIED, headers=headers)
        return web.Response(body=encoded, content_type="application/json", headers=headers)


def _not_ready() -> web.Response:
    return web.Response(
        status=HTTPStatus.SERVICE_UNAVAILABLE,
        text="503: signing keys not loaded yet",
        headers={"Retry-After": _RETRY_AFTER, "Cache-Control": "no-store"},
    )


def _whole_seconds(span: timedelta) -> int:
    """max-age is whole seconds: round down, so a cache never keeps a copy longer."""
    return math.floor(span.total_seconds())
