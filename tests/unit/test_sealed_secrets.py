"""Secrets sealed under the key-encryption keys (domain/key_encryption.py seal_secret):
they open only with their binding, and a signing key's sealing is no use for them."""

from __future__ import annotations

import pytest

from authsvc.core.models import SealedPrivateKey
from authsvc.domain.key_encryption import (
    KeyEncryptionError,
    LocalKeyWrapper,
    open_private_key,
    open_secret,
    seal_secret,
)

pytestmark = pytest.mark.asyncio

WRAPPER = LocalKeyWrapper([("kek-1", bytes(range(32)))], source="test")
SECRET = b"JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


async def test_a_sealed_secret_opens_with_its_binding_and_is_not_stored_in_clear() -> None:
    sealed = await seal_secret(WRAPPER, SECRET, binding=b"row-1")

    assert await open_secret(WRAPPER, sealed, binding=b"row-1") == SECRET
    assert SECRET not in sealed.ciphertext + sealed.wrapped_data_key
    assert sealed.kek_id == "kek-1"


async def test_a_sealed_secret_does_not_open_for_another_row() -> None:
    sealed = await seal_secret(WRAPPER, SECRET, binding=b"row-1")

    with pytest.raises(KeyEncryptionError):
        await open_secret(WRAPPER, sealed, binding=b"row-2")


async def test_a_sealed_secret_does_not_pass_for_a_signing_key() -> None:
    sealed = await seal_secret(WRAPPER, SECRET, binding=b"kid-1")
    as_key = SealedPrivateKey(
        kek_id=sealed.kek_id, wrapped_data_key=sealed.wrapped_data_key, ciphertext=sealed.ciphertext
    )

    with pytest.raises(KeyEncryptionError):
        await open_private_key(WRAPPER, "kid-1", as_key)
