"""A WebAuthn authenticator in software, answering options JSON as a browser and a platform
authenticator would: EC P-256 keys (ES256), "none" attestation, discoverable credentials,
user verification. Deliberately small; its knobs exist to make the server refuse things
(another origin or relying party, no user verification, a cloned counter)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SoftAuthenticator", "b64url", "unb64url"]

_UP, _UV, _AT = 0x01, 0x04, 0x40
_AAGUID = bytes(16)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int


class SoftAuthenticator:
    """`origin`: the page's origin the browser puts in client data."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.credentials: list[_Credential] = []

    def clone(self) -> SoftAuthenticator:
        """A copy holding the same keys and counters: what a cloned authenticator is."""
        twin = SoftAuthenticator(self.origin)
        twin.credentials = [copy.copy(c) for c in self.credentials]
        return twin

    def create(
        self,
        options_json: str,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        user_verified: bool = True,
    ) -> str:
        """navigator.credentials.create(): a new credential, as PublicKeyCredential.toJSON()."""
        options = json.loads(options_json)
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        if any(c.id in excluded for c in self.credentials):
            raise ValueError("InvalidStateError: a credential here is excluded")
        rp = rp_id or options["rp"]["id"]
        credential = _Credential(
            id=os.urandom(16),
            key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp,
            user_handle=unb64url(options["user"]["id"]),
            sign_count=0,
        )
        numbers = credential.key.public_key().public_numbers()
        cose_key = cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        flags = _UP | _AT | (_UV if user_verified else 0)
        auth_data = (
            hashlib.sha256(rp.encode()).digest()
            + bytes([flags])
            + struct.pack(">I", credential.sign_count)
            + _AAGUID
            + struct.pack(">H", len(credential.id))
            + credential.id
            + cose_key
        )
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials.append(credential)
        return json.dumps(
            {
                "id": b64url(credential.id),
                "rawId": b64url(credential.id),
                "type": "public-key",
                "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "attestationObject": b64url(attestation),
                    "transports": ["internal"],
                },
            }
        )

    def get(
        self,
        options_json: str,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        user_verified: bool = True,
        credential_index: int = 0,
    ) -> str:
        """navigator.credentials.get(): an assertion by an allowed credential (any of ours
        for the relying party when the options allow all, as for a discoverable login)."""
        options = json.loads(options_json)
        allowed = {unb64url(c["id"]) for c in options.get("allowCredentials", [])}
        usable = [
            c
            for c in self.credentials
            if c.rp_id == options["rpId"] and (not allowed or c.id in allowed)
        ]
        if not usable:
            raise ValueError("NotAllowedError: no credential for these options")
        credential = usable[credential_index]
        return self.assert_with(
            credential, options, origin=origin, rp_id=rp_id, user_verified=user_verified
        )

    def assert_with(
        self,
        credential: _Credential,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        user_verified: bool = True,
    ) -> str:
        credential.sign_count += 1
        flags = _UP | (_UV if user_verified else 0)
        auth_data = (
            hashlib.sha256((rp_id or credential.rp_id).encode()).digest()
            + bytes([flags])
            + struct.pack(">I", credential.sign_count)
        )
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = credential.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return json.dumps(
            {
                "id": b64url(credential.id),
                "rawId": b64url(credential.id),
                "type": "public-key",
                "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "authenticatorData": b64url(auth_data),
                    "signature": b64url(signature),
                    "userHandle": b64url(credential.user_handle),
                },
            }
        )

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()
