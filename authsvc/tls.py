"""TLS material for the server and for `authsvc healthcheck`, read once at start.

Every file is PEM. config.py has already checked that the files can be opened; here a
file that holds no certificate, a key that is encrypted or does not belong to the
certificate is a ConfigError naming its variable, raised before the port opens.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from authsvc.config import Config, ConfigError

__all__ = ["ClientTls", "client_tls", "http_tls", "server_credentials", "transport"]


def transport(config: Config) -> str:
    """`plaintext`, `tls` or `mtls`: what the server speaks, for the start-up log."""
    if config.tls_cert_file is None:
        return "plaintext"
    return "tls" if config.tls_client_ca_file is None else "mtls"


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """The server's credentials, or None for plaintext.

    With AUTHSVC_TLS_CLIENT_CA_FILE the handshake fails for a client that does not
    present a certificate signed by one of those CAs, before any RPC is seen.
    """
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    chain = _certificates(config.tls_cert_file, "AUTHSVC_TLS_CERT_FILE")
    key = _private_key(config.tls_key_file, "AUTHSVC_TLS_KEY_FILE", chain[0])
    client_cas = (
        None
        if config.tls_client_ca_file is None
        else _pem(_certificates(config.tls_client_ca_file, "AUTHSVC_TLS_CLIENT_CA_FILE"))
    )
    return grpc.ssl_server_credentials(
        [(_key_pem(key), _pem(chain))],
        root_certificates=client_cas,
        require_client_auth=client_cas is not None,
    )


def http_tls(config: Config) -> ssl.SSLContext | None:
    """The HTTP port's TLS, or None for plaintext: the gRPC port's certificate and key, and
    its client-certificate requirement too, so neither port is the weaker way in.

    Call after server_credentials, which says what is wrong with a file, by its variable.
    """
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        if config.tls_client_ca_file is not None:
            context.load_verify_locations(cafile=config.tls_client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the TLS files do not load for the HTTP port: {exc}") from exc
    return context


@dataclass(frozen=True, slots=True)
class ClientTls:
    credentials: grpc.ChannelCredentials
    # The name the server's certificate was issued for; the probe dials 127.0.0.1.
    server_name: str


def client_tls(config: Config) -> ClientTls | None:
    """How `authsvc healthcheck` reaches this server, or None for plaintext.

    It trusts exactly the server's own certificate (the first in AUTHSVC_TLS_CERT_FILE,
    pinned, so no CA setting is needed and any issuer works) under the first name that
    certificate carries. Against an mTLS server it presents
    AUTHSVC_TLS_CLIENT_CERT_FILE, which the client CAs must have signed.
    """
    if config.tls_cert_file is None:
        return None
    if config.tls_client_ca_file is not None and config.tls_client_cert_file is None:
        raise ConfigError(
            "AUTHSVC_TLS_CLIENT_CA_FILE is set, so authsvc healthcheck needs "
            "AUTHSVC_TLS_CLIENT_CERT_FILE and AUTHSVC_TLS_CLIENT_KEY_FILE"
        )
    leaf = _certificates(config.tls_cert_file, "AUTHSVC_TLS_CERT_FILE")[0]
    client_chain: bytes | None = None
    client_key: bytes | None = None
    if config.tls_client_cert_file is not None and config.tls_client_key_file is not None:
        chain = _certificates(config.tls_client_cert_file, "AUTHSVC_TLS_CLIENT_CERT_FILE")
        key = _private_key(config.tls_client_key_file, "AUTHSVC_TLS_CLIENT_KEY_FILE", chain[0])
        client_chain, client_key = _pem(chain), _key_pem(key)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem([leaf]), private_key=client_key, certificate_chain=client_chain
    )
    return ClientTls(credentials, _first_name(leaf))


def _certificates(path: Path, variable: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{variable}: no PEM certificate in {str(path)!r}") from exc


def _private_key(path: Path, variable: str, certificate: x509.Certificate) -> PrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{variable}: no unencrypted PEM private key in {str(path)!r}") from exc
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigError(f"{variable}: the key does not belong to the certificate")
    return key


def _pem(certificates: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _first_name(certificate: x509.Certificate) -> str:
    """A name gRPC will match against the certificate: a SAN, else the common name."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    for dns in sans.get_values_for_type(x509.DNSName):
        # A wildcard covers any one label in its place.
        return "healthcheck" + dns[1:] if dns.startswith("*.") else dns
    for ip in sans.get_values_for_type(x509.IPAddress):
        if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return str(ip)
    for common_name in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        return str(common_name.value)
    raise ConfigError("AUTHSVC_TLS_CERT_FILE: the certificate names no host")
