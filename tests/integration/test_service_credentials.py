"""Service credentials on a real server: with AUTHSVC_REQUIRE_SERVICE_CREDENTIALS, only a
configured service key or an allow-listed client certificate may call ValidateToken and
GetJwks. Unknown, malformed and missing keys, and a user's access token, are refused alike
with SERVICE_CREDENTIALS_REQUIRED; a key never reaches the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from authsvc.app import AuthServer
from authsvc.service_keys import mint_service_key
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import READY_TIMEOUT, ConfigFactory, Launch
from tests.helpers import Stub, bearer, error_info, register
from tests.pki import BILLING, Pem, ServicePki, service_pki
from tests.processes import authsvc_env, run_authsvc, server_group

pytestmark = pytest.mark.asyncio

StartServer = Callable[..., Any]

REFUSED = (grpc.StatusCode.UNAUTHENTICATED, "SERVICE_CREDENTIALS_REQUIRED")


async def _refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code, reason, _ = error_info(caught.value)
    return code, reason


async def _jwks_key_count(stub: Stub, metadata: tuple[tuple[str, str], ...] = ()) -> int:
    response = await stub.GetJwks(pb.GetJwksRequest(), metadata=metadata)
    keys: list[object] = json.loads(response.jwks_json)["keys"]
    return len(keys)


async def test_a_service_key_admits_its_service_to_validate_token(launch: Launch) -> None:
    key, entry = mint_service_key("billing")
    launched = await launch(service_keys=entry, require_service_credentials="true")
    session = await register(launched.stub)

    answer = await launched.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=session.access_token), metadata=bearer(key)
    )

    assert (answer.active, answer.user_id) == (True, session.user_id)


# Each way of calling without a service key: what `authorization` holds, if anything.
_NOT_A_SERVICE_KEY: dict[str, Callable[[str, str, str], tuple[tuple[str, str], ...]]] = {
    "none": lambda key, stranger, access_token: (),
    "a key of no configured entry": lambda key, stranger, access_token: bearer(stranger),
    "a key cut short": lambda key, stranger, access_token: bearer(key[:-1]),
    "a key with a character changed": lambda key, stranger, access_token: bearer(
        key[:-1] + ("A" if key[-1] != "A" else "B")
    ),
    "the key under another scheme": lambda key, stranger, access_token: (
        ("authorization", f"Basic {key}"),
    ),
    "an empty bearer": lambda key, stranger, access_token: (("authorization", "Bearer "),),
    "a user's access token": lambda key, stranger, access_token: bearer(access_token),
}


@pytest.mark.parametrize("sent", list(_NOT_A_SERVICE_KEY))
async def test_validate_token_refuses_a_caller_without_a_service_key(
    launch: Launch, sent: str
) -> None:
    key, entry = mint_service_key("billing")
    stranger, _ = mint_service_key("billing")
    launched = await launch(service_keys=entry, require_service_credentials="true")
    session = await register(launched.stub)
    metadata = _NOT_A_SERVICE_KEY[sent](key, stranger, session.access_token)

    refusal = await _refusal(
        launched.stub.ValidateToken(
            pb.ValidateTokenRequest(access_token=session.access_token), metadata=metadata
        )
    )

    assert refusal == REFUSED


async def test_two_keys_are_accepted_at_once_so_a_key_rotates_without_downtime(
    launch: Launch,
) -> None:
    old_key, old_entry = mint_service_key("billing")
    new_key, new_entry = mint_service_key("billing")
    launched = await launch(
        service_keys=f"{old_entry},{new_entry}", require_service_credentials="true"
    )

    counts = [await _jwks_key_count(launched.stub, bearer(key)) for key in (old_key, new_key)]

    assert all(count >= 1 for count in counts), counts


async def test_get_jwks_refuses_a_caller_without_a_service_key_when_required(
    launch: Launch,
) -> None:
    _, entry = mint_service_key("billing")
    launched = await launch(service_keys=entry, require_service_credentials="true")

    refusal = await _refusal(launched.stub.GetJwks(pb.GetJwksRequest()))

    assert refusal == REFUSED


async def test_validate_token_and_get_jwks_stay_open_without_the_setting(launch: Launch) -> None:
    _, entry = mint_service_key("billing")
    launched = await launch(service_keys=entry)
    session = await register(launched.stub)

    answer = await launched.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=session.access_token)
    )
    key_count = await _jwks_key_count(launched.stub)

    assert (answer.active, key_count >= 1) == (True, True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ServicePki:
    return service_pki(tmp_path_factory.mktemp("service-pki"))


@asynccontextmanager
async def _mtls_stub(
    start_server: StartServer, config_factory: ConfigFactory, pki: ServicePki, client: Pem
) -> AsyncIterator[Stub]:
    """A stub presenting `client`'s certificate to an mTLS server that requires service
    credentials and allows BILLING."""
    server: AuthServer = await start_server(
        config_factory(
            tls_cert_file=str(pki.server.cert_file),
            tls_key_file=str(pki.server.key_file),
            tls_client_ca_file=str(pki.ca.cert_file),
            service_identities=BILLING,
            require_service_credentials="true",
        )
    )
    async with asyncio.timeout(READY_TIMEOUT):
        await server.wait_ready()
    credentials = grpc.ssl_channel_credentials(
        pki.ca.cert, private_key=client.key, certificate_chain=client.cert
    )
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


async def test_an_allow_listed_client_certificate_admits_its_service(
    start_server: StartServer, config_factory: ConfigFactory, pki: ServicePki
) -> None:
    async with _mtls_stub(start_server, config_factory, pki, pki.billing) as stub:
        key_count = await _jwks_key_count(stub)

    assert key_count >= 1


async def test_a_client_certificate_the_ca_signed_but_not_on_the_allow_list_is_refused(
    start_server: StartServer, config_factory: ConfigFactory, pki: ServicePki
) -> None:
    async with _mtls_stub(start_server, config_factory, pki, pki.web) as stub:
        refusal = await _refusal(stub.GetJwks(pb.GetJwksRequest()))

    assert refusal == REFUSED


async def test_a_key_from_service_key_create_is_accepted_by_a_server_given_its_entry(
    pg_dsn: str,
) -> None:
    created = await run_authsvc("service-key", "create", "billing", env=authsvc_env(None))
    key, entry = created.stdout.splitlines()

    async with server_group() as group:
        server = await group.start_ready(
            pg_dsn, AUTHSVC_SERVICE_KEYS=entry, AUTHSVC_REQUIRE_SERVICE_CREDENTIALS="true"
        )
        key_count = await _jwks_key_count(server.stub, bearer(key))

    assert (created.code, key_count >= 1) == (0, True)


async def test_the_log_names_the_calling_service_and_never_its_key(pg_dsn: str) -> None:
    key, entry = mint_service_key("billing")
    stranger, _ = mint_service_key("billing")
    async with server_group() as group:
        server = await group.start_ready(
            pg_dsn,
            AUTHSVC_SERVICE_KEYS=entry,
            AUTHSVC_REQUIRE_SERVICE_CREDENTIALS="true",
            AUTHSVC_LOG_LEVEL="DEBUG",
        )
        await _jwks_key_count(server.stub, bearer(key))
        await _refusal(server.stub.GetJwks(pb.GetJwksRequest(), metadata=bearer(stranger)))
        server.terminate()
        await server.wait()
        log = server.stderr_tail

    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    callers = [
        (line.get("service"), line["reason"])
        for line in lines
        if line.get("event") == "rpc" and line["rpc"].endswith("/GetJwks")
    ]
    assert callers == [("billing", ""), (None, "SERVICE_CREDENTIALS_REQUIRED")]
    secrets = [part for k in (key, stranger) for part in (k, k.removeprefix("authsvc_sk_"))]
    assert [s for s in secrets if s in log] == []
