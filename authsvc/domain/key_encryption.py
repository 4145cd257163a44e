"""Signing keys at rest: envelope encryption under key-encryption keys (KEKs).

Each private key is encrypted (AES-256-GCM) under a fresh 256-bit data key of its own;
the data key is wrapped by a KEK that never enters the database. The row keeps the KEK's
id beside the two ciphertexts, and both are bound to the key's kid as associated data, so
a ciphertext copied onto another row does not decrypt. Rotating the KEK re-wraps the data
keys only. The KEKs come from a `KeyWrapper`: local keys from configuration here, a KMS
(whose Encrypt/Decrypt take the same associated data as an "encryption context") later.

Other secrets the service must read back (TOTP secrets) are sealed the same way by
`seal_secret`, bound to a caller's `binding` (the row's identity) instead of a kid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.core.models import PlaintextPrivateKey, SealedPrivateKey, SealedSecret

__all__ = [
    "KeyEncryptionError",
    "KeyWrapper",
    "LocalKeyWrapper",
    "open_private_key",
    "open_secret",
    "rewrap_private_key",
    "seal_private_key",
    "seal_secret",
]

_NONCE_BYTES = 12
_DATA_KEY_BITS = 256
# Distinct associated data for the two layers, so neither ciphertext passes for the other.
_DATA_KEY_CONTEXT = b"authsvc/signing-key/data-key/"
_PRIVATE_KEY_CONTEXT = b"authsvc/signing-key/private-key/"
# And for other secrets: neither passes for a signing key's, nor a signing key's for them.
_SECRET_DATA_KEY_CONTEXT = b"authsvc/secret/data-key/"
_SECRET_CONTEXT = b"authsvc/secret/plaintext/"


class KeyEncryptionError(Exception):
    """A stored private key cannot be decrypted with the configured key-encryption keys:
    its KEK is not configured, or the KEK under that id is not the one that encrypted it.
    The message names the signing key's kid and the KEK's id, never key material."""


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys under key-encryption keys (KEKs).

    A local implementation holds the KEKs in memory (`LocalKeyWrapper`); a KMS-backed one
    calls the KMS for each, with `context` as its encryption context. Data keys are
    unwrapped once per process and signing key (the key ring keeps the parsed key), so a
    network round trip per call is fine.
    """

    @property
    def current_kek_id(self) -> str:
        """The KEK `wrap` uses: what every data key should be under after a rewrap."""
        ...

    async def wrap(self, data_key: bytes, *, context: bytes) -> tuple[str, bytes]:
        """(the current KEK's id, `data_key` encrypted under it, bound to `context`)."""
        ...

    async def unwrap(self, kek_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        """The data key. Raises KeyEncryptionError if KEK `kek_id` is unknown here, or if
        `wrapped` was not wrapped under it with this `context` (a wrong key under a known
        id, a tampered or swapped row)."""
        ...


class LocalKeyWrapper:
    """KEKs held in memory, from configuration: the first wraps, every one unwraps.

    `source` names where the KEKs came from (the setting), for error messages.
    """

    __slots__ = ("_current", "_keks", "_source")

    def __init__(self, keks: Sequence[tuple[str, bytes]], *, source: str) -> None:
        if not keks:
            raise ValueError("at least one key-encryption key is needed")
        self._keks = {kek_id: AESGCM(secret) for kek_id, secret in keks}
        self._current = keks[0][0]
        self._source = source

    @property
    def current_kek_id(self) -> str:
        return self._current

    async def wrap(self, data_key: bytes, *, context: bytes) -> tuple[str, bytes]:
        return self._current, _encrypt(self._keks[self._current], data_key, context)

    async def unwrap(self, kek_id: str, wrapped: bytes, *, context: bytes) -> bytes:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyEncryptionError(
                f"key-encryption key {kek_id!r} is not configured: {self._source} holds "
                f"{sorted(self._keks)}; add the key that was removed (rewrap before removing)"
            )
        try:
            return _decrypt(kek, wrapped, context)
        except InvalidTag:
            raise KeyEncryptionError(
                f"key-encryption key {kek_id!r} in {self._source} does not decrypt a stored "
                "key: it is not the key that was configured under that id, or the row was "
                "altered"
            ) from None


async def seal_private_key(wrapper: KeyWrapper, kid: str, pem: bytes) -> SealedPrivateKey:
    """Encrypt `pem` under a new data key, and wrap that under the current KEK."""
    kek_id, wrapped, ciphertext = await _seal(
        wrapper, pem, _DATA_KEY_CONTEXT + kid.encode(), _PRIVATE_KEY_CONTEXT + kid.encode()
    )
    return SealedPrivateKey(kek_id=kek_id, wrapped_data_key=wrapped, ciphertext=ciphertext)


async def seal_secret(wrapper: KeyWrapper, secret: bytes, *, binding: bytes) -> SealedSecret:
    """Encrypt `secret` under a new data key wrapped under the current KEK, both bound to
    `binding`: `open_secret` then needs the same binding."""
    kek_id, wrapped, ciphertext = await _seal(
        wrapper, secret, _SECRET_DATA_KEY_CONTEXT + binding, _SECRET_CONTEXT + binding
    )
    return SealedSecret(kek_id=kek_id, wrapped_data_key=wrapped, ciphertext=ciphertext)


async def open_secret(wrapper: KeyWrapper, sealed: SealedSecret, *, binding: bytes) -> bytes:
    """The secret `seal_secret` sealed with `binding`; KeyEncryptionError if its KEK is not
    configured, or the row was altered or sealed for another binding."""
    data_key = await wrapper.unwrap(
        sealed.kek_id, sealed.wrapped_data_key, context=_SECRET_DATA_KEY_CONTEXT + binding
    )
    try:
        return _decrypt(AESGCM(data_key), sealed.ciphertext, _SECRET_CONTEXT + binding)
    except InvalidTag:
        raise KeyEncryptionError("a sealed secret's ciphertext was altered") from None


async def _seal(
    wrapper: KeyWrapper, plaintext: bytes, data_key_context: bytes, context: bytes
) -> tuple[str, bytes, bytes]:
    data_key = AESGCM.generate_key(bit_length=_DATA_KEY_BITS)
    ciphertext = _encrypt(AESGCM(data_key), plaintext, context)
    kek_id, wrapped = await wrapper.wrap(data_key, context=data_key_context)
    return kek_id, wrapped, ciphertext


async def open_private_key(
    wrapper: KeyWrapper, kid: str, stored: SealedPrivateKey | PlaintextPrivateKey
) -> bytes:
    """The PEM of signing key `kid`; KeyEncryptionError (naming `kid`) if it cannot be."""
    if isinstance(stored, PlaintextPrivateKey):
        return stored.pem
    data_key = await _unwrap(wrapper, kid, stored)
    try:
        return _decrypt(AESGCM(data_key), stored.ciphertext, _PRIVATE_KEY_CONTEXT + kid.encode())
    except InvalidTag:
        raise KeyEncryptionError(f"signing key {kid}: its ciphertext was altered") from None


async def rewrap_private_key(
    wrapper: KeyWrapper, kid: str, stored: SealedPrivateKey | PlaintextPrivateKey
) -> SealedPrivateKey | None:
    """`stored` under the current KEK (a plaintext key sealed, a sealed one's data key
    re-wrapped, its ciphertext kept), or None if it is under the current KEK already."""
    if isinstance(stored, PlaintextPrivateKey):
        return await seal_private_key(wrapper, kid, stored.pem)
    if stored.kek_id == wrapper.current_kek_id:
        return None
    data_key = await _unwrap(wrapper, kid, stored)
    kek_id, wrapped = await wrapper.wrap(data_key, context=_DATA_KEY_CONTEXT + kid.encode())
    return SealedPrivateKey(kek_id=kek_id, wrapped_data_key=wrapped, ciphertext=stored.ciphertext)


async def _unwrap(wrapper: KeyWrapper, kid: str, stored: SealedPrivateKey) -> bytes:
    try:
        return await wrapper.unwrap(
            stored.kek_id, stored.wrapped_data_key, context=_DATA_KEY_CONTEXT + kid.encode()
        )
    except KeyEncryptionError as exc:
        raise KeyEncryptionError(f"signing key {kid}: {exc}") from None


def _encrypt(cipher: AESGCM, plaintext: bytes, associated_data: bytes) -> bytes:
    # A random 96-bit nonce per message: a key encrypts a handful of messages, far from
    # the 2**32 after which random nonces risk repeating.
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + cipher.encrypt(nonce, plaintext, associated_data)


def _decrypt(cipher: AESGCM, sealed: bytes, associated_data: bytes) -> bytes:
    if len(sealed) < _NONCE_BYTES:
        raise InvalidTag
    return cipher.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated_data)
