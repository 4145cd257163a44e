"""Signing keys: generation, and the in-memory ring every replica keeps in sync."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from authsvc.core.clock import Clock
from authsvc.core.errors import NotReady
from authsvc.core.models import (
    AuditEvent,
    PlaintextPrivateKey,
    RequestOrigin,
    SealedPrivateKey,
    SigningKey,
)
from authsvc.domain.key_encryption import (
    KeyWrapper,
    open_private_key,
    rewrap_private_key,
    seal_private_key,
)

__all__ = [
    "ACTIVATION_DELAY_RELOADS",
    "SUPPORTED_ALGORITHMS",
    "KeyRing",
    "KeyStore",
    "generate_signing_key",
]

_log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = ("EdDSA", "ES256")
# A rotated-in key starts signing this many key reload intervals after the rotation.
ACTIVATION_DELAY_RELOADS = 2

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
StoredPrivateKey = SealedPrivateKey | PlaintextPrivateKey


class KeyStore(Protocol):
    """Signing keys, their private halves sealed. A key is active from `activates_at`
    until retired; at most one key is unretired. Every method raises
    DatabaseUnavailable when the database cannot be reached in time; then nothing it
    would have written is written."""

    async def add_key_if_none_active(self, key: SigningKey) -> None:
        """Store `key` unless an unretired key exists already (another replica stored
        one): then nothing changes, and it is no error. TypeError for a key whose
        private half is not sealed."""
        ...

    async def rotate(self, key: SigningKey, event: AuditEvent) -> None:
        """Add `key`, retire the unretired key as of `key.activates_at`, and record
        `event`, atomically. Concurrent rotations queue, so each retires the key the one
        before it added. TypeError for a key whose private half is not sealed."""
        ...

    async def usable_keys(self, retired_after: datetime) -> list[SigningKey]:
        """The unretired key and the keys retired after `retired_after`, newest first
        (an empty list before the first key is stored)."""
        ...

    async def private_keys(self, *, plaintext_only: bool) -> list[tuple[str, StoredPrivateKey]]:
        """(kid, private key as stored) of every key, retired or not, oldest first; with
        `plaintext_only`, of the keys stored in plaintext (by a version before encryption)
        only."""
        ...

    async def replace_private_key(
        self, kid: str, old: StoredPrivateKey, new: SealedPrivateKey
    ) -> bool:
        """Store `new` as key `kid`'s private key if it is still `old`; False if another
        process changed it first (or the key is gone)."""
        ...


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint: a kid derived from the key itself."""
    required = ("crv", "kty", "x") if jwk["kty"] == "OKP" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


async def generate_signing_key(
    algorithm: str, now: datetime, wrapper: KeyWrapper, *, activates_at: datetime | None = None
) -> SigningKey:
    """A new key pair, its private half sealed under `wrapper`'s current KEK."""
    private: PrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    else:
        raise ValueError(f"unsupported signing algorithm {algorithm!r}")
    kid = _thumbprint(jwk)
    public_jwk = {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=await seal_private_key(wrapper, kid, pem),
        public_jwk=public_jwk,
        created_at=now,
        activates_at=now if activates_at is None else activates_at,
        retired_at=None,
    )


class _LoadedKey:
    __slots__ = ("key", "private", "public")

    def __init__(self, key: SigningKey, private: PrivateKey) -> None:
        self.key = key
        self.private = private
        self.public: PublicKey = private.public_key()

    @classmethod
    async def load(cls, key: SigningKey, wrapper: KeyWrapper) -> _LoadedKey:
        pem = await open_private_key(wrapper, key.kid, key.private_key)
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError(f"key {key.kid} is not an EdDSA or ECDSA key")
        return cls(key, loaded)


class KeyRing:
    """The keys this replica signs and verifies with, reloaded from the store.

    Replicas pick up a rotation on their next reload (every `reload_interval`),
    or at once when they meet a token signed with a kid they do not know. A new
    key is published (in the JWKS) at once but signs only two `reload_interval`s
    after the rotation (one for every replica's next reload, one to spare for a slow
    or failed reload and for clock skew between hosts), when every replica publishes
    it too; the key it replaces signs until then. Retired keys stay usable for `access_token_ttl +
    reload_interval`: a replica that has not reloaded may sign with a retired key
    a little longer, and its tokens must verify everywhere until they expire.
    """

    def __init__(
        self,
        store: KeyStore,
        clock: Clock,
        wrapper: KeyWrapper,
        *,
        algorithm: str,
        access_token_ttl: timedelta,
        reload_interval: timedelta,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wrapper = wrapper
        self._algorithm = algorithm
        self._retention = access_token_ttl + reload_interval
        self._reload_interval = reload_interval
        self._keys: dict[str, _LoadedKey] = {}
        # Newest activation first: the first that signs now is the one to sign with.
        self._by_activation: list[_LoadedKey] = []
        self._jwks_json = '{"keys":[]}'
        self._last_unknown_kid_reload: datetime | None = None
        self._reload_lock = asyncio.Lock()

    @property
    def is_loaded(self) -> bool:
        return bool(self._by_activation)

    @property
    def reload_interval(self) -> timedelta:
        return self._reload_interval

    @property
    def jwks_max_age(self) -> timedelta:
        """How long a cache (a gateway's, a CDN's) may keep the published key set.

        The last replica publishes a rotated-in key one reload interval after the rotation;
        the key signs ACTIVATION_DELAY_RELOADS intervals after it. A copy taken just before
        that last publication must be refreshed in between: half of that time, so the other
        half is left for a slow reload and clock skew, as the schedule intends.
        """
        return (ACTIVATION_DELAY_RELOADS - 1) * self._reload_interval / 2

    async def ensure_active_key(self) -> None:
        """Seal keys a version before encryption stored in plaintext, create the first key
        if no replica has yet, then load the ring. KeyEncryptionError if a usable key
        cannot be decrypted with the configured KEKs: the server must not start then."""
        await self.rewrap(plaintext_only=True)
        now = self._clock.now()
        if not await self._store.usable_keys(now):
            key = await generate_signing_key(self._algorithm, now, self._wrapper)
            await self._store.add_key_if_none_active(key)
        await self.reload()

    async def rewrap(self, *, plaintext_only: bool = False) -> int:
        """Bring every stored private key under the current KEK (or, with `plaintext_only`,
        seal only those stored in plaintext); return how many this call changed.

        Afterwards no stored key needs any other KEK, so those can be removed from the
        configuration. Retired keys are included: nothing is left that needs an old KEK.
        KeyEncryptionError, before anything is changed for that key, if one cannot be
        decrypted.
        """
        changed = 0
        for kid, stored in await self._store.private_keys(plaintext_only=plaintext_only):
            new = await rewrap_private_key(self._wrapper, kid, stored)
            # A concurrent rewrap by another replica did the same work: not ours to count.
            if new is not None and await self._store.replace_private_key(kid, stored, new):
                changed += 1
        if plaintext_only and changed:
            _log.warning(
                "encrypted %d signing keys stored in plaintext by an earlier version; "
                "backups taken before still hold them, so rotate the signing key",
                changed,
                extra={"event": "signing_keys_sealed", "count": changed},
            )
        return changed

    async def rotate(self, origin: RequestOrigin | None = None) -> SigningKey:
        """Add a new key, published now and signing two reload intervals from now, when it
        replaces the current one; the old one keeps verifying (see the class)."""
        now = self._clock.now()
        key = await generate_signing_key(
            self._algorithm,
            now,
            self._wrapper,
            activates_at=now + ACTIVATION_DELAY_RELOADS * self._reload_interval,
        )
        event = AuditEvent(
            event="key_rotated",
            occurred_at=key.created_at,
            origin=origin or RequestOrigin(),
            detail={"kid": key.kid, "algorithm": key.algorithm},
        )
        await self._store.rotate(key, event)
        await self.reload()
        return key

    async def reload(self) -> None:
        async with self._reload_lock:
            keys = await self._store.usable_keys(self._clock.now() - self._retention)
            loaded: dict[str, _LoadedKey] = {}
            for k in keys:
                known = self._keys.get(k.kid)
                # A known key is not decrypted again, but takes the fresh row: its
                # retirement may be new.
                loaded[k.kid] = (
                    await _LoadedKey.load(k, self._wrapper)
                    if known is None
                    else _LoadedKey(k, known.private)
                )
            self._keys = loaded
            self._by_activation = sorted(
                loaded.values(), key=lambda k: k.key.activates_at, reverse=True
            )
            self._jwks_json = json.dumps(
                {"keys": [k.public_jwk for k in keys]}, separators=(",", ":"), sort_keys=True
            )

    def signing_key(self) -> tuple[str, str, PrivateKey]:
        """(kid, algorithm, private key) of the key that signs now."""
        signing = self._signing(self._clock.now())
        return signing.key.kid, signing.key.algorithm, signing.private

    def signing_key_age(self) -> timedelta | None:
        """How long ago the key that signs now was created; None before the keys load."""
        if not self._by_activation:
            return None
        now = self._clock.now()
        return now - self._signing(now).key.created_at

    def _signing(self, now: datetime) -> _LoadedKey:
        for loaded in self._by_activation:
            if loaded.key.signs_at(now):
                return loaded
        if not self._by_activation:
            raise NotReady("signing keys are not loaded yet")
        # Only a stale view (every key we know retired): the newest keeps signing until
        # the next reload; it verifies for its retention.
        return self._by_activation[0]

    async def verification_key(self, kid: str) -> tuple[str, PublicKey] | None:
        """(algorithm, public key) for `kid`, reloading at most once a second if unknown.

        Before the first load (the database not reached yet) every kid is unknown: that is
        NotReady, not a verdict on the token.
        """
        if not self._keys:
            raise NotReady("signing keys are not loaded yet")
        found = self._keys.get(kid)
        if found is None and self._may_reload_for_unknown_kid():
            await self.reload()
            found = self._keys.get(kid)
        return None if found is None else (found.key.algorithm, found.public)

    def jwks_json(self) -> str:
        """The public keys as a JWKS document; NotReady before the first load (an empty
        key set would tell verifiers that no token is valid)."""
        if not self._keys:
            raise NotReady("signing keys are not loaded yet")
        return self._jwks_json

    def _may_reload_for_unknown_kid(self) -> bool:
        # Unknown kids are also what forged tokens carry: do not let them
        # turn into a query per request.
        now = self._clock.now()
        last = self._last_unknown_kid_reload
        if last is not None and now - last < timedelta(seconds=1):
            return False
        self._last_unknown_kid_reload = now
        return True
