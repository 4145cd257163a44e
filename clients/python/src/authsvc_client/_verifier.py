"""TokenVerifier: trust an access token without a round trip, or with one when it matters."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

import grpc
import jwt

from authsvc_client._errors import (
    AuthsvcError,
    RevocationFeedStale,
    StepUpRequired,
    TokenInvalid,
    Unauthenticated,
    error_for,
)
from authsvc_client._models import AssuranceLevel, Principal, TokenValidation
from authsvc_client._revocations import (
    DEFAULT_STALE_AFTER,
    RevocationSource,
    RevocationWatch,
    WhenStale,
)
from authsvc_client.v1.error_reason_pb2 import ErrorReason

__all__ = [
    "DEFAULT_JWKS_REFETCH_INTERVAL",
    "DEFAULT_LEEWAY",
    "DEFAULT_STALE_AFTER",
    "JwksSource",
    "RevocationSource",
    "TokenVerifier",
    "WhenStale",
]

_log = logging.getLogger(__name__)

DEFAULT_JWKS_REFETCH_INTERVAL = timedelta(seconds=10)
# The server's default AUTHSVC_CLOCK_SKEW, so server and verifier refuse the same tokens.
DEFAULT_LEEWAY = timedelta(seconds=30)

_REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp"]
# RFC 9068 section 4: resource servers must check the type, so an ID token is not accepted.
_ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Far above any token authsvc mints; bounds the work a hostile string can cause.
_MAX_TOKEN_LENGTH = 8192
# The deny-list's refusal, in the words of ValidateToken's (see _verify_online).
_REVOKED = "access token is not active (SESSION_REVOKED)"


class JwksSource(Protocol):
    """Where keys (GetJwks) and live answers (ValidateToken) come from: an AuthClient."""

    async def get_jwks(self) -> Mapping[str, Any]: ...

    async def validate_token(self, access_token: str) -> TokenValidation: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _invalid(message: str) -> AuthsvcError:
    return error_for(ErrorReason.TOKEN_INVALID, message)


def _malformed(name: str) -> AuthsvcError:
    return _invalid(f"access token has a malformed {name} claim")


def _numeric_date(claims: Mapping[str, Any], name: str) -> datetime:
    """A NumericDate claim: RFC 7519 makes it a JSON number, so "123" is refused."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(name)
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise _malformed(name) from exc


def _uuid(claims: Mapping[str, Any], name: str) -> uuid.UUID:
    try:
        return uuid.UUID(claims[name])
    except (ValueError, TypeError, AttributeError) as exc:
        raise _malformed(name) from exc


def _amr(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The `amr` claim's methods; a token without one (minted before the service had second
    factors) has none."""
    value = claims.get("amr")
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def _why(error: jwt.PyJWTError) -> str:
    """What a PyJWT refusal means, in the words the Node verifier uses too."""
    match error:
        case jwt.InvalidSignatureError() | jwt.InvalidAlgorithmError():
            return "access token signature is invalid"
        case jwt.MissingRequiredClaimError():
            return f"access token lacks the {error.claim} claim"
        case jwt.InvalidAudienceError():
            return "access token is for another audience"
        case jwt.InvalidIssuerError():
            return "access token is from another issuer"
        case jwt.exceptions.InvalidSubjectError():
            return "access token has a malformed sub claim"
        case jwt.exceptions.InvalidJTIError():
            return "access token has a malformed jti claim"
        case jwt.DecodeError():
            return "access token is malformed"
    return "access token is invalid"


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
    verification alone cannot see a revoked session: its tokens pass until they expire (15
    minutes by default).

    Subscribed (`subscribe=True`, on an AuthClient with a service key): a background task
    follows WatchRevocations into a local deny-list of ended sessions, so a logged-out
    session's tokens are refused within about a second, at the cost of one dict lookup per
    token. It fails closed: while the feed is stale (no heartbeat or revocation for
    `stale_after`, default 5 s, or none yet since `start`), `when_stale` decides: ask
    ValidateToken (the default) or refuse with RevocationFeedStale. Start it with `start()`
    or `async with`, and end it with `aclose()`.

    Online (`online=True`, or `verify(token, online=True)`): after the offline checks,
    ValidateToken asks the service, which also refuses tokens of sessions that are logged
    out, revoked or expired. One RPC per call.

    Assurance: the principal carries the token's level (`acr`: AAL1 or AAL2) and `amr`.
    `min_assurance=AssuranceLevel.AAL2` (for every call, or per `verify`) refuses a token
    below it with StepUpRequired (PERMISSION_DENIED, reason STEP_UP_REQUIRED, no factor
    types), the refusal authsvc itself gives before a sensitive call: the user's app steps
    up and retries. A token without `acr` was minted before the service had levels, by a
    password: AAL1, as the service reads it.

    Failures raise TokenInvalid, whose message says why (the Node verifier's words),
    TokenExpired, SessionRevoked (online or from the deny-list) or online SessionExpired
    (both SessionExpired), StepUpRequired, Unavailable when the keys or the answer cannot
    be fetched, or its subclass RevocationFeedStale.
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
        subscribe: bool = False,
        stale_after: timedelta = DEFAULT_STALE_AFTER,
        when_stale: WhenStale = WhenStale.VALIDATE_ONLINE,
        min_assurance: AssuranceLevel | None = None,
    ) -> None:
        self._source = source
        self._min_assurance = min_assurance
        self._issuer = issuer
        self._audience = audience
        self._online = online
        self._now = now
        self._leeway = leeway
        self._refetch_interval = jwks_refetch_interval
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._last_refetch_at: datetime | None = None
        self._fetch_lock = asyncio.Lock()
        self._when_stale = when_stale
        self._watch: RevocationWatch | None = None
        if subscribe:
            if not isinstance(source, RevocationSource):
                raise TypeError(
                    "subscribe=True needs a source with watch_revocations: an AuthClient"
                )
            self._watch = RevocationWatch(source, stale_after=stale_after, leeway=leeway, now=now)

    async def start(self) -> None:
        """Start following the revocation feed (subscribed only; idempotent)."""
        if self._watch is not None:
            self._watch.start()

    async def aclose(self) -> None:
        """Stop following the feed; its task has ended when this returns. Idempotent."""
        if self._watch is not None:
            await self._watch.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def is_feed_current(self) -> bool:
        """Subscribed: whether the deny-list may be trusted now (False without subscription)."""
        return self._watch is not None and self._watch.is_current()

    def is_session_revoked(self, session_id: uuid.UUID) -> bool:
        """Subscribed: whether the feed has said this session ended (until all its tokens
        have expired). For calls authenticated once and kept open (streams, websockets):
        check it to end them when their session ends. False only means not heard of: see
        `is_feed_current`. Always False without subscription."""
        return self._watch is not None and session_id in self._watch.denied

    async def verify(
        self,
        access_token: str,
        *,
        online: bool | None = None,
        min_assurance: AssuranceLevel | None = None,
    ) -> Principal:
        """The principal `access_token` speaks for; raises if it must not be trusted.

        `min_assurance` overrides the verifier's for this call: AAL2 for a sensitive one.
        The level is checked after everything else, so StepUpRequired means "a good token,
        but not strong enough"."""
        principal = await self._verify_offline(access_token)
        if online is None:
            online = self._online
        watch = self._watch
        if watch is not None:
            # An ended session never comes back, so the deny-list is right even when stale.
            if principal.session_id in watch.denied:
                raise error_for(ErrorReason.SESSION_REVOKED, _REVOKED)
            if not watch.is_current():
                if self._when_stale is WhenStale.REFUSE:
                    raise RevocationFeedStale(
                        "the revocation feed is stale; no token is trusted until it is current",
                        code=grpc.StatusCode.UNAVAILABLE,
                    )
                online = True
        if online:
            await self._verify_online(access_token)
        required = self._min_assurance if min_assurance is None else min_assurance
        if required is not None and principal.assurance_level < required:
            raise StepUpRequired(
                f"access token is below assurance level {required.acr}",
                code=grpc.StatusCode.PERMISSION_DENIED,
                reason=ErrorReason.Name(ErrorReason.STEP_UP_REQUIRED),
            )
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
        except jwt.PyJWTError as exc:
            raise _invalid(_why(exc)) from exc
        principal = Principal(
            user_id=_uuid(claims, "sub"),
            session_id=_uuid(claims, "sid"),
            expires_at=_numeric_date(claims, "exp"),
            claims=claims,
            assurance_level=AssuranceLevel.from_acr(claims.get("acr")),
            amr=_amr(claims),
        )
        # Valid from its issue, or from `nbf` when that is later (as the server checks).
        not_before = _numeric_date(claims, "iat")
        if "nbf" in claims:
            not_before = max(not_before, _numeric_date(claims, "nbf"))
        now = self._now()
        if now < not_before - self._leeway:
            raise _invalid("access token is not valid yet")
        if now >= principal.expires_at + self._leeway:
            raise error_for(ErrorReason.TOKEN_EXPIRED, "access token has expired")
        return principal

    async def _verify_online(self, token: str) -> None:
        answer = await self._source.validate_token(token)
        if answer.is_active:
            return
        reason = answer.inactive_reason or ErrorReason.Name(ErrorReason.TOKEN_INVALID)
        message = f"access token is not active ({reason})"
        error = error_for(reason, message, code=grpc.StatusCode.UNAUTHENTICATED)
        if type(error) is Unauthenticated:
            # A reason newer than this client: still a token not to trust.
            error = TokenInvalid(message, code=error.code, reason=reason)
        raise error

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
