"""Access tokens: short-lived JWTs (RFC 9068 shape) signed by the key ring."""

from __future__ import annotations

import base64
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from jwt.algorithms import Algorithm, get_default_algorithms

from authsvc.core.clock import Clock
from authsvc.core.errors import TokenExpired, TokenInvalid
from authsvc.core.factors import Assurance
from authsvc.core.models import Principal, SessionId, UserId
from authsvc.domain.signing_keys import KeyRing, PrivateKey

__all__ = ["VERIFIED_CACHE_SIZE", "AccessSigner", "AccessTokens", "MintedAccessToken"]

_ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "jti", "iat", "exp"]
# Tokens whose signature checked out, most recently used last. Only verified
# tokens enter, so forged ones cannot flush it faster than real traffic fills it.
VERIFIED_CACHE_SIZE = 10_000
# Far above any token we mint; bounds the work a hostile string can cause.
_MAX_TOKEN_LENGTH = 4096


# As jwt.encode writes claims: compact, in insertion order.
_CLAIMS_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _numeric_date(value: object) -> datetime:
    """A NumericDate claim: RFC 7519 makes it a JSON number, so "123" is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a NumericDate: {value!r}")
    return datetime.fromtimestamp(int(value), UTC)


@dataclass(frozen=True, slots=True)
class AccessSigner:
    """The key a token will be signed with, chosen before the session's row is written so
    the row can name it (`kid`: RevokeSessions' signing-key filter)."""

    kid: str
    algorithm: str
    private_key: PrivateKey


@dataclass(frozen=True, slots=True)
class MintedAccessToken:
    token: str
    expires_at: datetime


class AccessTokens:
    __slots__ = (
        "_audience",
        "_clock",
        "_clock_skew",
        "_issuer",
        "_keys",
        "_signers",
        "_ttl",
        "_verified",
    )

    def __init__(
        self,
        keys: KeyRing,
        clock: Clock,
        *,
        issuer: str,
        audience: str,
        ttl: timedelta,
        clock_skew: timedelta,
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl
        self._clock_skew = clock_skew
        self._verified: OrderedDict[str, Principal] = OrderedDict()
        # kid -> (encoded header, algorithm); a kid names one key and algorithm for good.
        self._signers: dict[str, tuple[bytes, Algorithm]] = {}

    def signer(self) -> AccessSigner:
        """The key that signs now; NotReady before the keys load."""
        return AccessSigner(*self._keys.signing_key())

    def mint(
        self,
        user_id: UserId,
        session_id: SessionId,
        *,
        session_ends_at: datetime,
        assurance: Assurance,
        signer: AccessSigner | None = None,
    ) -> MintedAccessToken:
        """A token for the session, expiring after the TTL or, sooner, `clock_skew` before
        the session's deadline `session_ends_at`: accepted up to `clock_skew` past `exp`
        here and by the clients' verifiers, it is never accepted once its session has
        expired, so only revocation needs telling (docs/design.md, "Capped expiry").
        Signed by `signer` if given (the key recorded with the session), else the key
        that signs now. `acr`, `amr` (RFC 8176) and `auth_time` say how strongly and when
        the session's user last proved who they are."""
        kid, algorithm, private_key = (
            self._keys.signing_key()
            if signer is None
            else (signer.kid, signer.algorithm, signer.private_key)
        )
        # JWT times are whole seconds; truncate so expires_at matches `exp` exactly.
        now = self._clock.now().replace(microsecond=0)
        expires_at = min(
            now + self._ttl, (session_ends_at - self._clock_skew).replace(microsecond=0)
        )
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "jti": str(uuid.uuid4()),
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "auth_time": int(assurance.authenticated_at.timestamp()),
            "acr": assurance.level.acr,
            "amr": assurance.amr,
        }
        # The JWS compact form as jwt.encode writes it, with the header encoded once
        # per key and the signature from PyJWT's own algorithm: jwt.encode spends
        # a third of a mint (the signature aside) re-encoding the same header.
        header, signs = self._signer(kid, algorithm)
        signing_input = header + b"." + _b64url(_CLAIMS_ENCODER.encode(claims).encode())
        signature = _b64url(signs.sign(signing_input, private_key))
        token = (signing_input + b"." + signature).decode("ascii")
        return MintedAccessToken(token=token, expires_at=expires_at)

    def _signer(self, kid: str, algorithm: str) -> tuple[bytes, Algorithm]:
        """The encoded JWS header for key `kid`, and the algorithm that signs with it."""
        found = self._signers.get(kid)
        if found is None:
            header = {"alg": algorithm, "kid": kid, "typ": _ACCESS_TOKEN_TYPE}
            encoded = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
            found = self._signers[kid] = (_b64url(encoded), get_default_algorithms()[algorithm])
        return found

    async def verify(self, token: str) -> Principal:
        """Check signature, issuer, audience and times against our clock.

        Raises TokenInvalid for anything not minted by us, or not valid yet (`nbf`, or
        `iat` in the future); TokenExpired (with the principal attached) for our token
        past its `exp`. Each time allows `clock_skew`, as the clients' verifiers do.

        A bearer token is presented on every call for its whole life, so the
        outcome of the signature check is remembered per token (a bounded LRU of
        tokens that verified): the same bytes verify the same way while their key
        is usable, and a key stays usable until every token it signed has
        expired. Expiry itself is checked on every call.
        """
        principal = self._verified.get(token)
        if principal is None:
            principal = await self._verify_signature(token)
            self._remember(token, principal)
        else:
            self._verified.move_to_end(token)
        now = self._clock.now()
        not_before = max(principal.issued_at, principal.not_before or principal.issued_at)
        if now < not_before - self._clock_skew:
            raise TokenInvalid("access token is not valid yet")
        if now >= principal.expires_at + self._clock_skew:
            raise TokenExpired("access token has expired", principal=principal)
        return principal

    def is_capped(self, principal: Principal) -> bool:
        """Whether the token's `exp` is its session's deadline (less the skew), not its TTL:
        then its expiry may be its session's."""
        return principal.expires_at - principal.issued_at < self._ttl

    def _remember(self, token: str, principal: Principal) -> None:
        self._verified[token] = principal
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)

    async def _verify_signature(self, token: str) -> Principal:
        if len(token) > _MAX_TOKEN_LENGTH:
            raise TokenInvalid("access token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid("access token is malformed") from exc
        if header.get("typ") != _ACCESS_TOKEN_TYPE:
            # RFC 9068: only a JWT typed at+jwt is an access token, whoever signed it.
            raise TokenInvalid("not an access token")
        kid = header.get("kid")
        found = await self._keys.verification_key(kid) if isinstance(kid, str) else None
        if found is None:
            raise TokenInvalid("access token is signed by an unknown key")
        algorithm, public_key = found
        try:
            # Times are checked in verify() against the injected clock; PyJWT would use wall time.
            claims = jwt.decode(
                token,
                public_key,
                algorithms=[algorithm],
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
                user_id=UserId(uuid.UUID(claims["sub"])),
                session_id=SessionId(uuid.UUID(claims["sid"])),
                issued_at=_numeric_date(claims["iat"]),
                expires_at=_numeric_date(claims["exp"]),
                not_before=_numeric_date(claims["nbf"]) if "nbf" in claims else None,
                claims=claims,
            )
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, OSError) as exc:
            raise TokenInvalid("access token is invalid") from exc
        return principal
