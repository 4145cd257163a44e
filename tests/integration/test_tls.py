"""TLS and mutual TLS on the real port, with throwaway certificates made here.

One CA signs the server's certificate (localhost and 127.0.0.1) and a client
certificate; another CA signs a client certificate the server must refuse.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from authsvc.app import AuthServer
from authsvc.config import ConfigError
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import READY_TIMEOUT, TEST_KEY_ENCRYPTION_KEYS, ConfigFactory, NewDatabase
from tests.helpers import Stub, register
from tests.pki import Pem, issue
from tests.processes import run_healthcheck, server_group

pytestmark = pytest.mark.asyncio

StartServer = Callable[..., Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Upper bounds on a call or a command, not timing assertions.
CALL_TIMEOUT = 10
COMMAND_TIMEOUT = 60


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    stranger: Pem  # a client certificate signed by other_ca
    server_elsewhere: Pem  # signed by ca for authsvc.internal only: no 127.0.0.1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = issue(directory, "ca")
    _, other_cert, other_key = issue(directory, "other-ca")
    local = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server, _, _ = issue(
        directory,
        "server",
        issuer=(ca_cert, ca_key),
        names=local,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    server_elsewhere, _, _ = issue(
        directory,
        "server-elsewhere",
        issuer=(ca_cert, ca_key),
        names=(x509.DNSName("authsvc.internal"),),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client, _, _ = issue(
        directory, "client", issuer=(ca_cert, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    stranger, _, _ = issue(
        directory, "stranger", issuer=(other_cert, other_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Pki(ca, server, client, stranger, server_elsewhere)


def _tls_settings(pki: Pki, *, mutual: bool = False) -> dict[str, str]:
    settings = {
        "tls_cert_file": str(pki.server.cert_file),
        "tls_key_file": str(pki.server.key_file),
    }
    if mutual:
        settings["tls_client_ca_file"] = str(pki.ca.cert_file)
    return settings


async def _ready_server(
    start_server: StartServer, config_factory: ConfigFactory, **settings: str
) -> int:
    server: AuthServer = await start_server(config_factory(**settings))
    async with asyncio.timeout(READY_TIMEOUT):
        await server.wait_ready()
    return server.port


@asynccontextmanager
async def _stub(port: int, credentials: grpc.ChannelCredentials | None) -> AsyncIterator[Stub]:
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


async def _jwks_key_count(stub: Stub) -> int:
    response = await stub.GetJwks(pb.GetJwksRequest(), timeout=CALL_TIMEOUT)
    keys: list[object] = json.loads(response.jwks_json)["keys"]
    return len(keys)


async def _refused_with(stub: Stub) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJwks(pb.GetJwksRequest(), timeout=CALL_TIMEOUT)
    return caught.value.code()


async def _healthcheck(port: int, **settings: str) -> tuple[int, str]:
    """`authsvc healthcheck` against 127.0.0.1:port: (exit code, stderr)."""
    run = await run_healthcheck(port, **settings)
    return run.code, run.stderr


async def test_tls_server_answers_a_client_that_trusts_its_ca(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    port = await _ready_server(start_server, config_factory, **_tls_settings(pki))

    async with _stub(port, grpc.ssl_channel_credentials(pki.ca.cert)) as stub:
        key_count = await _jwks_key_count(stub)

    assert key_count >= 1


async def test_tls_server_refuses_a_plaintext_client(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    port = await _ready_server(start_server, config_factory, **_tls_settings(pki))

    async with _stub(port, None) as stub:
        code = await _refused_with(stub)

    assert code == grpc.StatusCode.UNAVAILABLE


async def test_mtls_server_answers_a_client_certificate_its_client_ca_signed(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    port = await _ready_server(start_server, config_factory, **_tls_settings(pki, mutual=True))
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert, private_key=pki.client.key, certificate_chain=pki.client.cert
    )

    async with _stub(port, credentials) as stub:
        key_count = await _jwks_key_count(stub)

    assert key_count >= 1


async def test_mtls_server_refuses_a_client_without_a_certificate(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    port = await _ready_server(start_server, config_factory, **_tls_settings(pki, mutual=True))

    async with _stub(port, grpc.ssl_channel_credentials(pki.ca.cert)) as stub:
        code = await _refused_with(stub)

    assert code == grpc.StatusCode.UNAVAILABLE


async def test_mtls_server_refuses_a_client_certificate_from_another_ca(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    port = await _ready_server(start_server, config_factory, **_tls_settings(pki, mutual=True))
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert, private_key=pki.stranger.key, certificate_chain=pki.stranger.cert
    )

    async with _stub(port, credentials) as stub:
        code = await _refused_with(stub)

    assert code == grpc.StatusCode.UNAVAILABLE


async def test_healthcheck_passes_against_a_tls_server(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    settings = _tls_settings(pki)
    port = await _ready_server(start_server, config_factory, **settings)

    code, stderr = await _healthcheck(port, **settings)

    assert code == 0, stderr


@pytest.mark.parametrize(
    ("client", "exit_code"), [("client", 0), ("stranger", 1)], ids=["its_own_ca", "another_ca"]
)
async def test_healthcheck_against_an_mtls_server_passes_only_with_a_certificate_its_ca_signed(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki, client: str, exit_code: int
) -> None:
    settings = _tls_settings(pki, mutual=True)
    port = await _ready_server(start_server, config_factory, **settings)
    certificate = getattr(pki, client)

    code, stderr = await _healthcheck(
        port,
        **settings,
        tls_client_cert_file=str(certificate.cert_file),
        tls_client_key_file=str(certificate.key_file),
    )

    assert code == exit_code, stderr


async def test_healthcheck_passes_when_the_certificate_does_not_name_the_loopback_address(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    settings = {
        "tls_cert_file": str(pki.server_elsewhere.cert_file),
        "tls_key_file": str(pki.server_elsewhere.key_file),
    }
    port = await _ready_server(start_server, config_factory, **settings)

    code, stderr = await _healthcheck(port, **settings)

    assert code == 0, stderr


async def test_healthcheck_without_a_client_certificate_for_mtls_names_the_setting(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    settings = _tls_settings(pki, mutual=True)
    port = await _ready_server(start_server, config_factory, **settings)

    code, stderr = await _healthcheck(port, **settings)

    assert code == 2
    assert "AUTHSVC_TLS_CLIENT_CERT_FILE" in stderr


async def test_server_refuses_a_key_that_does_not_belong_to_its_certificate(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    config = config_factory(
        tls_cert_file=str(pki.server.cert_file), tls_key_file=str(pki.client.key_file)
    )

    with pytest.raises(ConfigError) as caught:
        await start_server(config)

    assert "AUTHSVC_TLS_KEY_FILE" in str(caught.value)


async def test_server_refuses_a_certificate_file_that_holds_no_certificate(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    config = config_factory(
        tls_cert_file=str(pki.server.key_file), tls_key_file=str(pki.server.key_file)
    )

    with pytest.raises(ConfigError) as caught:
        await start_server(config)

    assert "AUTHSVC_TLS_CERT_FILE" in str(caught.value)


async def test_serve_exits_2_naming_the_key_variable_when_the_key_does_not_match(
    pg_dsn: str, pki: Pki
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(
        AUTHSVC_DATABASE_URL=pg_dsn,
        AUTHSVC_KEY_ENCRYPTION_KEYS=TEST_KEY_ENCRYPTION_KEYS,
        AUTHSVC_HOST="127.0.0.1",
        AUTHSVC_PORT="0",
        AUTHSVC_TLS_CERT_FILE=str(pki.server.cert_file),
        AUTHSVC_TLS_KEY_FILE=str(pki.client.key_file),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authsvc",
        "serve",
        env=env,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            _, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 2, err.decode()
    assert "AUTHSVC_TLS_KEY_FILE" in err.decode()


async def test_a_botched_handshake_leaves_the_server_log_json_only(
    pki: Pki, new_database: NewDatabase
) -> None:
    # gRPC's C core would log the failed handshake in its own format on stderr; any client
    # can trigger it, and it would break the JSON-lines log operators parse.
    dsn = await new_database()
    tls = {
        "AUTHSVC_TLS_CERT_FILE": str(pki.server.cert_file),
        "AUTHSVC_TLS_KEY_FILE": str(pki.server.key_file),
    }
    async with server_group() as group:
        server = await group.start(dsn, **tls)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError):
                await auth_service_pb2_grpc.AuthServiceStub(plaintext).GetJwks(
                    pb.GetJwksRequest(), timeout=5
                )
        server.terminate()
        code = await server.wait()

    lines = server.stderr_tail.splitlines()
    assert code == 0
    assert lines
    assert [line for line in lines if not _is_our_log_line(line)] == []


def _is_our_log_line(line: str) -> bool:
    """A JSON log record, or one of the CLI's `authsvc: ...` lines."""
    if line.startswith("authsvc: "):
        return True
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# --- the HTTP port (JWKS for gateways) speaks TLS like the gRPC port ---------------------


async def _https_server(
    start_server: StartServer, config_factory: ConfigFactory, settings: dict[str, str]
) -> tuple[AuthServer, str]:
    """A ready server with TLS and an HTTP port; its JWKS URL."""
    server: AuthServer = await start_server(config_factory(http_port="0", **settings))
    async with asyncio.timeout(READY_TIMEOUT):
        await server.wait_ready()
    return server, f"https://127.0.0.1:{server.http_port}/.well-known/jwks.json"


def _trusting(pki: Pki, client: Pem | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca.cert_file)
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


async def _jwks_over(url: str, context: ssl.SSLContext | bool) -> int:
    """The HTTP status of a GET of `url`, with this TLS (False: none, over http://)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as session,
        session.get(url, ssl=context) as response,
    ):
        return response.status


async def test_https_port_presents_the_grpc_certificate_and_serves_a_verifying_jwks(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    server, url = await _https_server(start_server, config_factory, _tls_settings(pki))
    async with _stub(server.port, grpc.ssl_channel_credentials(pki.ca.cert)) as stub:
        token = (await register(stub)).access_token
    assert server.http_port is not None

    presented = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", server.http_port))
    client = jwt.PyJWKClient(url, ssl_context=_trusting(pki))
    key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)

    assert x509.load_pem_x509_certificate(presented.encode()) == x509.load_pem_x509_certificate(
        pki.server.cert
    )
    assert jwt.decode(token, key, algorithms=["EdDSA"], audience="authsvc")["sub"]


async def test_https_port_refuses_plain_http(
    start_server: StartServer, config_factory: ConfigFactory, pki: Pki
) -> None:
    _, url = await _https_server(start_server, config_factory, _tls_settings(pki))

    with pytest.raises(aiohttp.ClientError):
        await _jwks_over(url.replace("https://", "http://"), False)


@pytest.mark.parametrize(
    ("client", "served"),
    [("client", True), ("stranger", False), (None, False)],
    ids=["its_own_ca", "another_ca", "no_certificate"],
)
async def test_https_port_of_an_mtls_server_serves_only_a_certificate_its_client_ca_signed(
    start_server: StartServer,
    config_factory: ConfigFactory,
    pki: Pki,
    client: str | None,
    served: bool,
) -> None:
    _, url = await _https_server(start_server, config_factory, _tls_settings(pki, mutual=True))
    context = _trusting(pki, None if client is None else getattr(pki, client))

    try:
        status: int | None = await _jwks_over(url, context)
    except aiohttp.ClientError:
        status = None

    assert (status == 200) is served
