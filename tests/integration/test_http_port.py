"""The HTTP port: the JWKS and OpenID discovery for gateways, on real sockets.

Servers in this process (`launch` with an HTTP port) show the documents, their caching
and the port's limits; `authsvc serve` processes show what takes a process: the port off
by default, two workers serving it, and consumers (PyJWT's PyJWKClient, jose's
createRemoteJWKSet) verifying tokens across a rotation made by `authsvc keys rotate`
under the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from authsvc.app import AuthServer, build_key_ring
from authsvc.config import parse_duration
from authsvc.store.bootstrap import ensure_database
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import ConfigFactory, Launch, Launched, NewDatabase, dsn_for_database, pool_on
from tests.helpers import Stub, login, register
from tests.processes import (
    REPO_ROOT,
    WAIT,
    ServerProcess,
    authsvc_env,
    eventually,
    run_authsvc,
    server_group,
)

pytestmark = pytest.mark.asyncio

JWKS = "/.well-known/jwks.json"
DISCOVERY = "/.well-known/openid-configuration"
DOCUMENTS = (JWKS, DISCOVERY)
# The reload interval of the rotation tests: a key rotated in signs two of them later.
FAST_RELOAD = "2s"
JOSE_VERIFIER = Path(__file__).with_name("jose_verifier.mjs")
OPERATIONS = REPO_ROOT / "docs" / "operations.md"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def max_age(self) -> timedelta:
        found = re.fullmatch(r"public, max-age=(\d+)", self.headers["Cache-Control"])
        assert found is not None, self.headers["Cache-Control"]
        return timedelta(seconds=int(found[1]))


async def fetch(
    port: int, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> Answer:
    """One request on a new connection to 127.0.0.1:port."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
        session.request(method, f"http://127.0.0.1:{port}{path}", headers=headers) as response,
    ):
        return Answer(response.status, CIMultiDict(response.headers), await response.read())


async def raw_status_line(port: int, request: bytes) -> bytes:
    """Send `request` as it is on a new connection; the first line of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(WAIT):
            return await reader.readline()
    finally:
        writer.close()


async def http_server(launch: Launch, **settings: str) -> tuple[Launched, int]:
    """A ready server in this process with an HTTP port; the server and that port."""
    # Typed loosely: `settings` are setting names, never launch's own keywords.
    start: Any = launch
    launched: Launched = await start(http_port="0", **settings)
    assert launched.server.http_port is not None
    return launched, launched.server.http_port


async def jwks_of(stub: Stub) -> bytes:
    response: pb.GetJwksResponse = await stub.GetJwks(pb.GetJwksRequest())
    return response.jwks_json.encode()


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


async def verified(client: jwt.PyJWKClient, token: str) -> dict[str, Any]:
    """The claims of `token` as a service using PyJWKClient checks it (its HTTP runs in a
    thread: the server may share this loop)."""
    key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["EdDSA", "ES256"], audience="authsvc", issuer="authsvc"
    )
    return claims


# --- the documents -----------------------------------------------------------------


async def test_the_jwks_url_serves_the_key_set_getjwks_answers(launch: Launch) -> None:
    launched, port = await http_server(launch)
    await register(launched.stub)

    answer = await fetch(port, JWKS)

    assert (answer.status, answer.headers["Content-Type"]) == (200, "application/json")
    assert answer.body == await jwks_of(launched.stub)


async def test_pyjwkclient_verifies_a_fresh_access_token_with_the_jwks_url(
    launch: Launch,
) -> None:
    launched, port = await http_server(launch)
    registered = await register(launched.stub)

    claims = await verified(
        jwt.PyJWKClient(f"http://127.0.0.1:{port}{JWKS}"), registered.access_token
    )

    assert (claims["sub"], claims["sid"]) == (registered.user_id, registered.session_id)


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
async def test_discovery_names_the_tokens_issuer_and_the_algorithms_of_the_published_keys(
    launch: Launch, algorithm: str
) -> None:
    launched, port = await http_server(launch, signing_algorithm=algorithm)
    registered = await register(launched.stub)

    document = (await fetch(port, DISCOVERY)).json()

    claims = jwt.decode(registered.access_token, options={"verify_signature": False})
    assert document == {
        "issuer": claims["iss"],
        "jwks_uri": f"http://127.0.0.1:{port}{JWKS}",
        "id_token_signing_alg_values_supported": [algorithm],
        "subject_types_supported": ["public"],
    }


async def test_discovery_lists_a_rotated_in_keys_algorithm_before_it_signs(
    launch: Launch, config_factory: ConfigFactory
) -> None:
    launched, port = await http_server(launch)
    server = launched.server
    es256 = config_factory(signing_algorithm="ES256")
    await build_key_ring(es256, server.pool, server.clock).rotate()
    await server.keys.reload()  # its periodic reload

    document = (await fetch(port, DISCOVERY)).json()
    signed_meanwhile = await register(launched.stub)

    assert document["id_token_signing_alg_values_supported"] == ["ES256", "EdDSA"]
    assert jwt.get_unverified_header(signed_meanwhile.access_token)["alg"] == "EdDSA"


async def test_discovery_jwks_uri_serves_the_key_set(launch: Launch) -> None:
    launched, port = await http_server(launch)
    document = (await fetch(port, DISCOVERY)).json()

    async with (
        aiohttp.ClientSession() as session,
        session.get(document["jwks_uri"]) as response,
    ):
        body = await response.read()

    assert body == await jwks_of(launched.stub)


@pytest.mark.parametrize(
    ("settings", "jwks_uri"),
    [
        # Neither names a URL: the one the request came to.
        ({}, "http://{host}" + JWKS),
        # An issuer that is a URL, as OpenID discovery expects: the document is under it.
        ({"issuer": "https://auth.example.com"}, "https://auth.example.com" + JWKS),
        (
            {"issuer": "https://auth.example.com", "http_public_url": "https://gw.example/auth/"},
            "https://gw.example/auth" + JWKS,
        ),
    ],
)
async def test_discovery_jwks_uri_is_the_public_url_else_the_issuer_else_the_requests_own(
    launch: Launch, settings: dict[str, str], jwks_uri: str
) -> None:
    _, port = await http_server(launch, **settings)

    document = (await fetch(port, DISCOVERY)).json()

    assert document["jwks_uri"] == jwks_uri.format(host=f"127.0.0.1:{port}")


async def test_discovery_refuses_a_host_header_no_url_can_be_made_of(launch: Launch) -> None:
    _, port = await http_server(launch)

    status = await raw_status_line(
        port, b"GET " + DISCOVERY.encode() + b" HTTP/1.1\r\nHost: a/b@c\r\n\r\n"
    )

    assert status.startswith(b"HTTP/1.1 400 ")


async def test_the_curl_examples_in_the_operations_guide_run_as_written(launch: Launch) -> None:
    _, port = await http_server(launch)
    found = re.search(r"<!-- http-curl\b.*?-->\n```sh\n(.*?)```", OPERATIONS.read_text(), re.S)
    assert found, "docs/operations.md has no block marked http-curl"
    script, repointed = re.subn(
        r"^URL=\S+", f"URL=http://127.0.0.1:{port}", found[1], count=1, flags=re.M
    )
    assert repointed == 1

    shell = await asyncio.create_subprocess_exec(
        "bash", "-c", "set -euo pipefail\n" + script, stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(WAIT):
        out, _ = await shell.communicate()

    assert shell.returncode == 0
    expected_in_order = ['"kty": "OKP"', f'"jwks_uri": "http://127.0.0.1:{port}{JWKS}"', "304"]
    positions = [out.decode().find(text) for text in expected_in_order]
    assert -1 not in positions, out.decode()
    assert positions == sorted(positions), out.decode()


# --- caching -------------------------------------------------------------------------


def _strong(tag: str) -> str:
    return tag


def _weak(tag: str) -> str:
    return "W/" + tag


def _among_others(tag: str) -> str:
    return f'"other", {tag}'


def _any(tag: str) -> str:
    return "*"


@pytest.mark.parametrize("path", DOCUMENTS)
@pytest.mark.parametrize("if_none_match", [_strong, _weak, _among_others, _any])
async def test_an_unchanged_document_answers_304_to_its_etag(
    launch: Launch, path: str, if_none_match: Callable[[str], str]
) -> None:
    _, port = await http_server(launch)
    first = await fetch(port, path)

    again = await fetch(port, path, headers={"If-None-Match": if_none_match(first.headers["ETag"])})

    assert (again.status, again.body) == (304, b"")
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]


async def test_the_etag_is_strong_and_changes_when_a_key_is_rotated_in(launch: Launch) -> None:
    launched, port = await http_server(launch)
    before = await fetch(port, JWKS)
    new_key = await launched.server.keys.rotate()

    after = await fetch(port, JWKS, headers={"If-None-Match": before.headers["ETag"]})

    assert re.fullmatch(r'"[^"]+"', before.headers["ETag"])  # not W/
    assert after.status == 200
    assert after.headers["ETag"] != before.headers["ETag"]
    assert new_key.kid in {key["kid"] for key in after.json()["keys"]}


@pytest.mark.parametrize("reload_interval", ["1s", "60s", "10m"])
async def test_a_cache_that_keeps_the_jwks_for_its_max_age_has_a_new_key_before_it_signs(
    launch: Launch, reload_interval: str
) -> None:
    # Every replica publishes a rotated-in key within one reload interval; a cache that
    # took its copy from a replica just before then must be past max-age when the key
    # starts signing.
    launched, port = await http_server(launch, key_reload_interval=reload_interval)
    max_age = (await fetch(port, JWKS)).max_age

    new_key = await launched.server.keys.rotate()

    published_everywhere_by = parse_duration(reload_interval)
    signs_after = new_key.activates_at - new_key.created_at
    assert published_everywhere_by + max_age < signs_after


# --- the port's manners ---------------------------------------------------------------


@pytest.mark.parametrize("path", DOCUMENTS)
async def test_head_answers_the_headers_of_get_without_a_body(launch: Launch, path: str) -> None:
    _, port = await http_server(launch)
    got = await fetch(port, path)

    head = await fetch(port, path, method="HEAD")

    assert (head.status, head.body) == (200, b"")
    for header in ("ETag", "Cache-Control", "Content-Type", "Content-Length"):
        assert head.headers[header] == got.headers[header]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_405_naming_get_and_head(launch: Launch, method: str) -> None:
    _, port = await http_server(launch)

    answer = await fetch(port, JWKS, method=method)

    assert answer.status == 405
    assert set(answer.headers["Allow"].split(",")) == {"GET", "HEAD"}


@pytest.mark.parametrize(
    "path", ["/", "/.well-known", "/.well-known/", "/.well-known/jwks.json/", "/metrics"]
)
async def test_other_paths_are_404(launch: Launch, path: str) -> None:
    _, port = await http_server(launch)

    answer = await fetch(port, path)

    assert answer.status == 404


@pytest.mark.parametrize(("path", "method"), [(JWKS, "GET"), (JWKS, "POST"), ("/nothing", "GET")])
async def test_answers_name_no_library_or_python_version(
    launch: Launch, path: str, method: str
) -> None:
    _, port = await http_server(launch)

    answer = await fetch(port, path, method=method)

    assert answer.headers["Server"] == "authsvc"


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: 1\r\n" % n for n in range(40))
            + b"\r\n",
            id="40 headers",
        ),
        pytest.param(
            b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Long: "
            + b"a" * 5000
            + b"\r\n\r\n",
            id="a 5000-byte header",
        ),
        pytest.param(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="a long path"),
    ],
)
async def test_requests_past_the_size_limits_are_refused_with_400_and_no_error_log(
    launch: Launch, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    _, port = await http_server(launch)
    caplog.set_level(logging.INFO)

    status = await raw_status_line(port, request_bytes)

    async def access_logged() -> bool:
        return any(getattr(r, "status", None) == 400 for r in caplog.records)

    assert status.split()[:2] == [b"HTTP/1.0", b"400"]
    # Anyone can send these: an access-log line each, not an ERROR with a traceback.
    await eventually(access_logged)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("trickles", [False, True], ids=["silent", "trickling"])
async def test_a_connection_without_a_whole_request_in_time_is_closed(
    launch: Launch, trickles: bool
) -> None:
    _, port = await http_server(launch, http_read_timeout="1s")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:
        # A slowloris: a byte of its last header now and then, never the end of it.
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(0.1)
                writer.write(b"a")
                await writer.drain()

    trickling = asyncio.create_task(trickle()) if trickles else None
    try:
        async with asyncio.timeout(WAIT):
            left = await reader.read()
    finally:
        if trickling is not None:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
        writer.close()

    assert left == b""  # closed, without an answer


# --- readiness ------------------------------------------------------------------------


@pytest_asyncio.fixture
async def server_without_database(
    pg_admin_dsn: str,
    config_factory: ConfigFactory,
    start_server: Callable[..., Any],
) -> AsyncIterator[tuple[AuthServer, str]]:
    """A started server with an HTTP port whose database does not exist yet; and its name."""
    database = f"authsvc_absent_{uuid.uuid4().hex[:12]}"
    async with pool_on(dsn_for_database(pg_admin_dsn, database)) as server_pool:
        server: AuthServer = await start_server(
            config_factory(http_port="0"), server_pool=server_pool
        )
        try:
            yield server, database
        finally:
            # Stop before closing the pool its background tasks use.
            await server.stop(None)


async def test_documents_are_503_with_retry_after_until_the_keys_load_then_200(
    server_without_database: tuple[AuthServer, str], pg_admin_dsn: str
) -> None:
    server, database = server_without_database
    assert server.http_port is not None
    before = [await fetch(server.http_port, path) for path in DOCUMENTS]

    await ensure_database(pg_admin_dsn, database)
    async with asyncio.timeout(WAIT):
        await server.wait_ready()
    after = [await fetch(server.http_port, path) for path in DOCUMENTS]

    for answer in before:
        assert answer.status == 503
        assert answer.headers["Retry-After"] == "1"
        assert answer.headers["Cache-Control"] == "no-store"
    assert [answer.status for answer in after] == [200, 200]


# --- processes --------------------------------------------------------------------------


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = fd.readlink().name
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def test_the_http_port_is_off_by_default(new_database: NewDatabase) -> None:
    async with server_group() as group:
        server = await group.start_ready(await new_database())

        listening = _listening_ports(server.process.pid)

    assert listening == {server.port}
    assert server.http_port is None


def _answered_by(server: ServerProcess, request_id: str) -> int | None:
    """The pid of the process whose access log names this request."""
    for line in server.stderr_tail.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "http_request" and entry.get("request_id") == request_id:
                pid: int = entry["pid"]
                return pid
    return None


async def test_two_workers_both_serve_the_same_jwks(new_database: NewDatabase) -> None:
    async with server_group() as group:
        server = await group.start_ready(
            await new_database(), AUTHSVC_WORKERS="2", AUTHSVC_HTTP_PORT="0"
        )
        assert server.http_port is not None
        port = server.http_port
        answers: dict[int, Answer] = {}

        async def both_answered() -> bool:
            # Each fetch is a new connection, which the kernel gives either worker.
            answer = await fetch(port, JWKS)
            request_id = answer.headers["X-Request-Id"]

            async def logged() -> bool:
                return _answered_by(server, request_id) is not None

            await eventually(logged)
            pid = _answered_by(server, request_id)
            assert pid is not None
            # start_ready saw one worker ready; the other may still be loading its keys (503).
            if answer.status == 200:
                answers[pid] = answer
            return len(answers) == 2

        await eventually(both_answered)

    assert len(answers) == 2
    assert server.process.pid not in answers  # the supervisor serves nothing itself
    first, second = answers.values()
    assert first.body == second.body
    assert first.headers["ETag"] == second.headers["ETag"]


async def _rotated(dsn: str) -> None:
    """`authsvc keys rotate` on `dsn`, as an operator runs it."""
    run = await run_authsvc(
        "keys", "rotate", env=authsvc_env(dsn, AUTHSVC_KEY_RELOAD_INTERVAL=FAST_RELOAD)
    )
    assert run.code == 0, run.stderr


async def _signed_with_another_key(stub: Stub, kid: str) -> pb.LoginResponse:
    """A login whose access token another key than `kid` signed: once the rotated-in key
    activates (two reload intervals after the rotation)."""
    found: list[pb.LoginResponse] = []

    async def signed_anew() -> bool:
        found.append(await login(stub))
        return kid_of(found[-1].access_token) != kid

    await eventually(signed_anew)
    return found[-1]


@pytest_asyncio.fixture
async def rotating_server(
    new_database: NewDatabase,
) -> AsyncIterator[tuple[ServerProcess, str]]:
    """`authsvc serve` with an HTTP port and a short key reload interval; and its DSN."""
    dsn = await new_database()
    async with server_group() as group:
        server = await group.start_ready(
            dsn, AUTHSVC_HTTP_PORT="0", AUTHSVC_KEY_RELOAD_INTERVAL=FAST_RELOAD
        )
        yield server, dsn


async def test_pyjwkclient_verifies_tokens_across_a_key_rotation(
    rotating_server: tuple[ServerProcess, str],
) -> None:
    server, dsn = rotating_server
    assert server.http_port is not None
    url = f"http://127.0.0.1:{server.http_port}{JWKS}"
    # Keep the key set no longer than the server says, as docs/operations.md advises.
    client = jwt.PyJWKClient(url, lifespan=(await fetch(server.http_port, JWKS)).max_age.seconds)
    first = await register(server.stub)
    before = await verified(client, first.access_token)
    await _rotated(dsn)

    second = await _signed_with_another_key(server.stub, kid_of(first.access_token))
    after = [await verified(client, t) for t in (second.access_token, first.access_token)]

    assert [claims["sid"] for claims in (before, *after)] == [
        first.session_id,
        second.session_id,
        first.session_id,
    ]


async def test_jose_remote_jwks_verifies_tokens_across_a_key_rotation(
    rotating_server: tuple[ServerProcess, str],
) -> None:
    server, dsn = rotating_server
    assert server.http_port is not None
    max_age = (await fetch(server.http_port, JWKS)).max_age
    # Keep the key set no longer than the server says, as docs/operations.md advises.
    options = {"cacheMaxAge": int(max_age.total_seconds() * 1000)}
    node = await asyncio.create_subprocess_exec(
        "node",
        "--input-type=module",
        "-e",
        JOSE_VERIFIER.read_text(),
        "--",
        f"http://127.0.0.1:{server.http_port}{JWKS}",
        "authsvc",
        "authsvc",
        json.dumps(options),
        cwd=REPO_ROOT / "clients" / "node",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert node.stdin is not None
    assert node.stdout is not None
    stdin, stdout = node.stdin, node.stdout

    async def verdict(token: str) -> dict[str, str]:
        stdin.write(token.encode() + b"\n")
        async with asyncio.timeout(WAIT):
            line = await stdout.readline()
        assert line, "the jose verifier exited"
        answer: dict[str, str] = json.loads(line)
        return answer

    try:
        first = await register(server.stub)
        before = await verdict(first.access_token)
        await _rotated(dsn)

        second = await _signed_with_another_key(server.stub, kid_of(first.access_token))
        after = [await verdict(t) for t in (second.access_token, first.access_token)]
    finally:
        stdin.close()
        async with asyncio.timeout(WAIT):
            await node.wait()

    assert [before, *after] == [
        {"sub": first.user_id, "kid": kid_of(first.access_token)},
        {"sub": second.user_id, "kid": kid_of(second.access_token)},
        {"sub": first.user_id, "kid": kid_of(first.access_token)},
    ]
