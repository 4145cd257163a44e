"""TokenVerifier: trust an access token without a round trip, or with one when it matters."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc
import jwt

from authsvc_client._errors import AuthsvcError, SessionExpired, TokenExpired, TokenInvalid
from authsvc_client._models import Principal, TokenValidation

__all__ = ["DEFAULT_JWKS_REFETCH_INTERVAL", "DEFAULT_LEEWAY", "JwksSource", "TokenVerifier"]

_log = logging.getLogger(__name__)

DEFAULT_JWKS_REFETCH_INTERVAL = timedelta(seconds=10)
# The server's default AUTHSVC_CLOCK_SKEW, so server and verifier refuse the same tokens.
DEFAULT_LEEWAY = timedelta(seconds=30)

_REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp"]
# RFC 9068 section 4: resource servers must check the type, so an ID token is not accepted.
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Far above any token authsvc mints; bounds the work a hostile string can cause.
_MAX_TOKEN_LENGTH = 8192


class JwksSource(Protocol):
    """Where keys (GetJwks) and live answers (ValidateToken) come from: an AuthClient."""

    async def get_jwks(self) -> Mapping[str, Any]: ...

    async def validate_token(self, access_token: str) -> TokenValidation: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _numeric_date(value: object) -> datetime:
    """A NumericDate claim: RFC 7519 makes it a JSON number, so "123" is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a NumericDate: {value!r}")
    return datetime.fromtimestamp(int(value), UTC)


def _invalid(message: str) -> TokenInvalid:
    return TokenInvalid(message, code=grpc.StatusCode.UNAUTHENTICATED, reason="TOKEN_INVALID")


def _parse_key_set(jwks: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """kid -> key, for the signing keys this PyJWT can use; others are skipped, not fatal."""
    keys: dict[str, jwt.PyJWK] = {}
    for entry in jwks.get("keys", ()):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            keys[entry["kid"]] = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError as exc:
            _log.warning(
                "skipping unusable JWKS key %s: %s",
                entry["kid"],
                exc,
                extra={"event": "jwks_key_skipped"},
            )
    return keys


class TokenVerifier:
    """Verifies authsvc access tokens for an internal service.

    Offline (the default): the signature against the service's JWKS, fetched once with
    GetJwks and cached; the required claims; `iss` and `aud`; the times by the injected
    `now`, each with `leeway` (the server's allowance, 30 s): `exp` passed, `nbf` (when
    present) or `iat` still in the future; the JWT type `at+jwt`; and only the algorithm the
    key itself declares, so a token cannot choose a weaker one. A token whose `kid` is not
    cached triggers one refetch (a key rotation), but at most once per
    `jwks_refetch_interval`, because forged tokens carry unknown kids too. Offline
    verification cannot see a revoked session: its tokens pass until they expire (15
    minutes by default).

    Online (`online=True`, or `verify(token, online=True)`): after the offline checks,
    ValidateToken asks the service, which also refuses tokens of sessions that are logged
    out, revoked or expired. One RPC per call.

    Failures raise TokenInvalid, TokenExpired, SessionExpired (online: SESSION_REVOKED or
    SESSION_EXPIRED), or Unavailable when the keys or the answer cannot be fetched.
    """

    def __init__(
        self,
        source: JwksSource,
        *,
        issuer: str = "authsvc",
        audience: str = "authsvc",
        online: bool = False,
        now: Callable[[], datetime] = _utc_now,
        leeway: timedelta = DEFAULT_LEEWAY,
        jwks_refetch_interval: timedelta = DEFAULT_JWKS_REFETCH_INTERVAL,
    ) -> None:
        self._source = source
        self._issuer = issuer
        self._audience = audience
        self._online = online
        self._now = now
        self._leeway = leeway
        self._refetch_interval = jwks_refetch_interval
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._last_refetch_at: datetime | None = None
        self._fetch_lock = asyncio.Lock()

    async def verify(self, access_token: str, *, online: bool | None = None) -> Principal:
        """The principal `access_token` speaks for; raises if it must not be trusted."""
        principal = await self._verify_offline(access_token)
        if self._online if online is None else online:
            await self._verify_online(access_token)
        return principal

    async def _verify_offline(self, token: str) -> Principal:
        if len(token) > _MAX_TOKEN_LENGTH:
            raise _invalid("access token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid("access token is malformed") from exc
        if str(header.get("typ", "")).lower() not in _ACCESS_TOKEN_TYPES:
            raise _invalid("not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        key = await self._key(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid("access token is signed by an unknown key")
        try:
            # Times are checked below against the injected clock; PyJWT would use wall time.
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
            principal = Principal(
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                expires_at=_numeric_date(claims["exp"]),
                claims=claims,
            )
            # Valid from its issue, or from `nbf` when that is later (as the server checks).
            not_before = _numeric_date(claims["iat"])
            if "nbf" in claims:
                not_before = max(not_before, _numeric_date(claims["nbf"]))
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, OSError) as exc:
            raise _invalid("access token is invalid") from exc
        now = self._now()
        if now < not_before - self._leeway:
            raise _invalid("access token is not valid yet")
        if now >= principal.expires_at + self._leeway:
            raise TokenExpired(
                "access token has expired",
                code=grpc.StatusCode.UNAUTHENTICATED,
                reason="TOKEN_EXPIRED",
            )
        return principal

    async def _verify_online(self, token: str) -> None:
        answer = await self._source.validate_token(token)
        if answer.is_active:
            return
        reason = answer.inactive_reason or "TOKEN_INVALID"
        error_type: type[AuthsvcError] = {
            "TOKEN_EXPIRED": TokenExpired,
            "SESSION_REVOKED": SessionExpired,
            "SESSION_EXPIRED": SessionExpired,
        }.get(reason, TokenInvalid)
        raise error_type(
            f"access token is not active ({reason})",
            code=grpc.StatusCode.UNAUTHENTICATED,
            reason=reason,
        )

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        keys = self._keys
        if keys is not None and kid in keys:
            return keys[kid]
        async with self._fetch_lock:
            # Another call may have fetched while this one waited.
            keys = self._keys
            if keys is not None and kid in keys:
                return keys[kid]
            if keys is None or self._may_refetch():
                keys = await self._fetch()
            return keys.get(kid)

    def _may_refetch(self) -> bool:
        now = self._now()
        last = self._last_refetch_at
        if last is not None and now - last < self._refetch_interval:
            return False
        self._last_refetch_at = now
        return True

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        keys = _parse_key_set(await self._source.get_jwks())
        self._keys = keys
        _log.info("fetched JWKS", extra={"event": "jwks_fetched", "kids": sorted(keys)})
        return keys
