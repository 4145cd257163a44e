"""ValidateToken: introspection of our access tokens, and refusal of everything else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import timestamp_pb2

from authsvc.config import parse_key_encryption_keys
from authsvc.core.clock import FrozenClock
from authsvc.core.models import SealedPrivateKey
from authsvc.domain.key_encryption import LocalKeyWrapper, open_private_key
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import TEST_KEY_ENCRYPTION_KEYS
from tests.helpers import (
    ACCESS_TOKEN_TTL,
    CLOCK_SKEW,
    Stub,
    bearer,
    error_info,
    register,
    validate,
)

pytestmark = pytest.mark.asyncio


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = jwt.get_unverified_header(token)
    return header


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def _stored_private_key(pool: Pool) -> tuple[str, bytes]:
    """(kid, PKCS8 PEM) of the active signing key, read straight from the table and
    decrypted with the tests' key-encryption key (what a holder of the KEK could do)."""
    row = await pool.fetchrow(
        "SELECT kid, kek_id, wrapped_data_key, private_key_ciphertext FROM signing_keys"
        " WHERE retired_at IS NULL"
    )
    assert row is not None
    sealed = SealedPrivateKey(
        kek_id=row["kek_id"],
        wrapped_data_key=bytes(row["wrapped_data_key"]),
        ciphertext=bytes(row["private_key_ciphertext"]),
    )
    keks = parse_key_encryption_keys(TEST_KEY_ENCRYPTION_KEYS)
    wrapper = LocalKeyWrapper(keks.keys, source="TEST_KEY_ENCRYPTION_KEYS")
    return row["kid"], await open_private_key(wrapper, row["kid"], sealed)


def _assert_invalid_and_anonymous(response: pb.ValidateTokenResponse) -> None:
    assert (response.active, response.inactive_reason) == (False, "TOKEN_INVALID")
    assert response.user_id == ""
    assert response.session_id == ""
    assert not response.HasField("claims")


async def _sign_with_stored_key(pool: Pool, claims: dict[str, Any], **header: str) -> str:
    kid, pem = await _stored_private_key(pool)
    return jwt.encode(
        claims, pem, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt", **header}
    )


# --- tokens we minted ------------------------------------------------------


async def test_validate_active_token_reports_its_principal_and_times(
    stub: Stub, clock: FrozenClock
) -> None:
    registered = await register(stub)

    response = await validate(stub, registered.access_token)

    issued_at = timestamp_pb2.Timestamp()
    issued_at.FromDatetime(clock.now())
    assert response.active
    assert response.inactive_reason == ""
    assert response.user_id == registered.user_id
    assert response.session_id == registered.session_id
    assert response.expires_at == registered.access_token_expires_at
    assert response.issued_at == issued_at


async def test_validate_active_token_returns_its_claims(stub: Stub) -> None:
    registered = await register(stub)

    response = await validate(stub, registered.access_token)

    claims = dict(response.claims)
    assert {"iss", "aud", "sub", "sid", "jti", "iat", "exp"} <= claims.keys()
    assert claims["sub"] == registered.user_id
    assert claims["sid"] == registered.session_id
    assert (claims["iss"], claims["aud"]) == ("authsvc", "authsvc")


async def test_validate_token_is_active_until_its_exp(stub: Stub, clock: FrozenClock) -> None:
    registered = await register(stub)
    clock.advance(ACCESS_TOKEN_TTL - timedelta(seconds=1))

    response = await validate(stub, registered.access_token)

    assert response.active


async def test_validate_expired_token_is_token_expired_with_its_user(
    stub: Stub, clock: FrozenClock
) -> None:
    registered = await register(stub)
    clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW)

    response = await validate(stub, registered.access_token)

    assert (response.active, response.inactive_reason) == (False, "TOKEN_EXPIRED")
    assert response.user_id == registered.user_id
    assert response.session_id == registered.session_id
    assert response.expires_at == registered.access_token_expires_at


async def test_token_validated_before_its_exp_is_expired_after_it(
    stub: Stub, clock: FrozenClock
) -> None:
    # The server remembers tokens whose signature checked out; expiry must not be remembered.
    registered = await register(stub)
    assert (await validate(stub, registered.access_token)).active
    clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW)

    response = await validate(stub, registered.access_token)

    assert (response.active, response.inactive_reason) == (False, "TOKEN_EXPIRED")


async def test_token_used_before_its_exp_is_refused_after_it(
    stub: Stub, clock: FrozenClock
) -> None:
    registered = await register(stub)
    await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(registered.access_token))
    clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(registered.access_token))

    assert error_info(caught.value)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


async def test_validate_after_logout_is_session_revoked(stub: Stub) -> None:
    registered = await register(stub)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(registered.access_token))

    response = await validate(stub, registered.access_token)

    assert (response.active, response.inactive_reason) == (False, "SESSION_REVOKED")
    assert response.user_id == registered.user_id


async def test_token_validated_again_after_logout_is_revoked_with_the_same_principal(
    stub: Stub,
) -> None:
    # The server keeps each token's principal part of the answer; its verdict must not be kept.
    registered = await register(stub)
    first = await validate(stub, registered.access_token)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(registered.access_token))

    again = await validate(stub, registered.access_token)

    assert (first.active, again.active, again.inactive_reason) == (True, False, "SESSION_REVOKED")
    assert again.end_reason == pb.SESSION_END_REASON_USER_LOGOUT
    first.ClearField("active")
    for field in ("active", "inactive_reason", "end_reason", "ended_at"):
        again.ClearField(field)
    assert again == first


async def test_validate_empty_token_names_the_access_token_field(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ValidateToken(pb.ValidateTokenRequest(access_token=""))

    assert error_info(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "access_token"},
    )


async def test_token_re_signed_with_the_stored_key_and_same_claims_is_active(
    stub: Stub, pool: Pool
) -> None:
    # Control for the forgeries below: the harness itself produces acceptable tokens.
    registered = await register(stub)
    token = await _sign_with_stored_key(pool, _claims(registered.access_token))

    response = await validate(stub, token)

    assert response.active


# --- forgeries: all inactive, TOKEN_INVALID, and say nothing about a user ------


async def test_validate_garbage_is_token_invalid(stub: Stub) -> None:
    response = await validate(stub, "not.a.jwt")

    _assert_invalid_and_anonymous(response)


async def test_validate_alg_none_token_is_token_invalid(stub: Stub) -> None:
    registered = await register(stub)
    header = {**_header(registered.access_token), "alg": "none"}
    token = f"{_b64url_json(header)}.{_b64url_json(_claims(registered.access_token))}."

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


@pytest.mark.parametrize("encoding", ["raw", "pem"])
async def test_validate_hs256_token_keyed_with_the_public_key_is_token_invalid(
    stub: Stub, encoding: str
) -> None:
    # Algorithm confusion: an HMAC keyed with the published public key.
    registered = await register(stub)
    jwks: pb.GetJwksResponse = await stub.GetJwks(pb.GetJwksRequest())
    public_key = jwt.PyJWK(json.loads(jwks.jwks_json)["keys"][0]).key
    assert isinstance(public_key, ed25519.Ed25519PublicKey)
    secret = (
        public_key.public_bytes_raw()
        if encoding == "raw"
        else public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    header = {**_header(registered.access_token), "alg": "HS256"}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(_claims(registered.access_token))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

    response = await validate(stub, f"{signing_input}.{_b64url(signature)}")

    _assert_invalid_and_anonymous(response)


async def test_validate_token_signed_by_another_key_with_our_kid_is_token_invalid(
    stub: Stub,
) -> None:
    registered = await register(stub)
    other_key = ed25519.Ed25519PrivateKey.generate()
    token = jwt.encode(
        _claims(registered.access_token),
        other_key,
        algorithm="EdDSA",
        headers=_header(registered.access_token),
    )

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


async def test_validate_token_with_an_unknown_kid_is_token_invalid(stub: Stub, pool: Pool) -> None:
    registered = await register(stub)
    token = await _sign_with_stored_key(pool, _claims(registered.access_token), kid="unknown-kid")

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


@pytest.mark.parametrize("typ", ["JWT", "id+jwt", ""])
async def test_validate_token_signed_with_our_key_but_not_an_access_token_is_token_invalid(
    stub: Stub, pool: Pool, typ: str
) -> None:
    # RFC 9068: an access token says typ at+jwt, so no other JWT of ours can pass for one.
    registered = await register(stub)
    token = await _sign_with_stored_key(pool, _claims(registered.access_token), typ=typ)

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


async def test_validate_token_with_a_tampered_payload_is_token_invalid(stub: Stub) -> None:
    registered = await register(stub)
    header, _, signature = registered.access_token.split(".")
    claims = {**_claims(registered.access_token), "sub": str(uuid.uuid4())}
    token = f"{header}.{_b64url_json(claims)}.{signature}"

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iss", "https://evil.example"),
        ("aud", "another-service"),
        # Substrings of ours: PyJWT 2.10.0 compared iss with `in` (CVE-2024-53861).
        ("iss", "auth"),
        ("aud", "auth"),
    ],
    ids=["wrong-iss", "wrong-aud", "substring-iss", "substring-aud"],
)
async def test_validate_token_signed_with_our_key_for_another_party_is_token_invalid(
    stub: Stub, pool: Pool, claim: str, value: str
) -> None:
    registered = await register(stub)
    claims = {**_claims(registered.access_token), claim: value}
    token = await _sign_with_stored_key(pool, claims)

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "sid", "jti", "iat", "exp"])
async def test_validate_token_signed_with_our_key_missing_a_claim_is_token_invalid(
    stub: Stub, pool: Pool, claim: str
) -> None:
    registered = await register(stub)
    claims = _claims(registered.access_token)
    del claims[claim]
    token = await _sign_with_stored_key(pool, claims)

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)


async def test_validate_token_pairing_a_user_with_another_users_session_is_token_invalid(
    stub: Stub, pool: Pool
) -> None:
    alice = await register(stub, email="alice@example.com")
    bob = await register(stub, email="bob@example.com")
    claims = {**_claims(alice.access_token), "sid": bob.session_id}
    token = await _sign_with_stored_key(pool, claims)

    response = await validate(stub, token)

    _assert_invalid_and_anonymous(response)
