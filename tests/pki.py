"""Throwaway certificates for TLS tests: a CA, and certificates it signs, as PEM files."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BILLING", "WEB", "Issuer", "Pem", "ServicePki", "issue", "service_pki"]

# A CA's certificate and key, to sign others with.
Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True, slots=True)
class Pem:
    """A certificate and its key, as files (for the server and the CLI) and bytes."""

    cert_file: Path
    key_file: Path

    @property
    def cert(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key(self) -> bytes:
        return self.key_file.read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    directory: Path,
    stem: str,
    *,
    issuer: Issuer | None = None,
    names: tuple[x509.GeneralName, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> tuple[Pem, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `stem`: a self-signed CA when `issuer` is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    issuer_name, signing_key = (
        (_name(stem), key) if issuer is None else (issuer[0].subject, issuer[1])
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(stem))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    pem = Pem(directory / f"{stem}.crt", directory / f"{stem}.key")
    pem.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, cert, key


BILLING = "spiffe://example.org/billing"
WEB = "spiffe://example.org/web"


@dataclass(frozen=True, slots=True)
class ServicePki:
    ca: Pem
    server: Pem
    # Both signed by `ca`, with the URI SANs BILLING and WEB.
    billing: Pem
    web: Pem


def service_pki(directory: Path) -> ServicePki:
    """A CA, a server certificate for localhost and 127.0.0.1, and two client
    certificates naming a service each, in `directory`."""
    ca, ca_cert, ca_key = issue(directory, "ca")
    local = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server, _, _ = issue(
        directory,
        "server",
        issuer=(ca_cert, ca_key),
        names=local,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )

    def client(stem: str, identity: str) -> Pem:
        pem, _, _ = issue(
            directory,
            stem,
            issuer=(ca_cert, ca_key),
            names=(x509.UniformResourceIdentifier(identity),),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        return pem

    return ServicePki(ca, server, client("billing", BILLING), client("web", WEB))
