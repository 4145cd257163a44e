"""/metrics on the HTTP port: what a scrape shows after known calls, on real sockets.

Servers in this process share prometheus-client's registry, so each test compares a
scrape after its calls with one before. `authsvc serve --workers 2` shows that one
scrape, whichever worker answers it, adds up every worker's calls.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from authsvc.config import ConfigError
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import Launch, Launched, NewDatabase, make_config
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, refresh, refresh_failure
from tests.processes import WAIT, ServerProcess, eventually, server_group

pytestmark = pytest.mark.asyncio

# A channel of its own connection (else channels to one target share one).
_OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
# (sample name, sorted label pairs) -> value
Samples = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> tuple[int, str, str]:
    """GET /metrics on a new connection: the status, the body and the request id."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return response.status, await response.text(), response.headers["X-Request-Id"]


def parsed(body: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def samples(port: int) -> Samples:
    status, body, _ = await scrape(port)
    assert status == 200, body
    return parsed(body)


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every authsvc sample whose value changed between the scrapes, by how much."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if key[0].startswith("authsvc_") and after[key] != before.get(key, 0.0)
    }


async def metrics_server(launch: Launch, **settings: str) -> tuple[Stub, int]:
    # Typed loosely: `settings` are setting names, never launch's own keywords.
    start: Any = launch
    launched: Launched = await start(http_port="0", metrics="true", **settings)
    assert launched.server.http_port is not None
    return launched.stub, launched.server.http_port


async def _register(stub: Stub, email: str) -> None:
    # Register answers without tokens (it does not reveal accounts): no login, no session.
    await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))


async def test_counters_move_by_exactly_the_calls_made(launch: Launch, clock: FrozenClock) -> None:
    stub, port = await metrics_server(
        launch, session_idle_timeout="1m", login_failures_per_account_and_ip="1"
    )
    await _register(stub, "alice@example.com")
    await _register(stub, "bob@example.com")
    before = await samples(port)

    alice = await login(stub, "alice@example.com")
    bob_first = await login(stub, "bob@example.com")
    bob_second = await login(stub, "bob@example.com")
    bob_third = await login(stub, "bob@example.com")
    with pytest.raises(grpc.aio.AioRpcError):
        await login(stub, "alice@example.com", password="wrong password")
    with pytest.raises(grpc.aio.AioRpcError) as throttled:
        await login(stub, "alice@example.com")
    assert error_info(throttled.value)[1] == "RATE_LIMITED"
    await refresh(stub, alice.refresh_token)  # ok
    await refresh(stub, alice.refresh_token)  # grace replay: the same token again at once
    assert (await refresh_failure(stub, "not a refresh token"))[1] == "REFRESH_TOKEN_INVALID"
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=bob_second.session_id),
        metadata=bearer(bob_first.access_token),
    )
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(bob_first.access_token))
    assert (await refresh_failure(stub, bob_second.refresh_token))[1] == "SESSION_REVOKED"
    clock.advance(timedelta(seconds=11))  # past the refresh grace period (10 s)
    assert (await refresh_failure(stub, alice.refresh_token))[1] == "REFRESH_TOKEN_REUSED"
    await refresh(stub, bob_third.refresh_token)  # ok: the session now lasts to 71 s
    clock.advance(timedelta(seconds=50))  # the first token's own expiry (60 s) has passed
    assert (await refresh_failure(stub, bob_third.refresh_token))[1] == "REFRESH_TOKEN_EXPIRED"

    after = await samples(port)
    changes = moved(before, after)
    counters = {key: delta for key, delta in changes.items() if key[0].endswith("_total")}
    assert counters == {
        ("authsvc_logins_total", (("outcome", "ok"),)): 4,
        ("authsvc_logins_total", (("outcome", "bad_credentials"),)): 1,
        ("authsvc_logins_total", (("outcome", "throttled"),)): 1,
        ("authsvc_refreshes_total", (("outcome", "ok"),)): 2,
        ("authsvc_refreshes_total", (("outcome", "grace_replay"),)): 1,
        ("authsvc_refreshes_total", (("outcome", "invalid"),)): 1,
        ("authsvc_refreshes_total", (("outcome", "session_over"),)): 1,
        ("authsvc_refreshes_total", (("outcome", "reused"),)): 1,
        ("authsvc_refreshes_total", (("outcome", "expired"),)): 1,
        ("authsvc_sessions_created_total", ()): 4,
        ("authsvc_sessions_ended_total", (("kind", "revoked"), ("reason", "user_revoked"))): 1,
        ("authsvc_sessions_ended_total", (("kind", "logout"), ("reason", "user_logout"))): 1,
        ("authsvc_sessions_ended_total", (("kind", "reuse"), ("reason", "refresh_token_reuse"))): 1,
        **_handled("Login", "OK", "", 4),
        **_handled("Login", "UNAUTHENTICATED", "INVALID_CREDENTIALS", 1),
        **_handled("Login", "RESOURCE_EXHAUSTED", "RATE_LIMITED", 1),
        **_handled("Refresh", "OK", "", 3),
        **_handled("Refresh", "UNAUTHENTICATED", "REFRESH_TOKEN_INVALID", 1),
        **_handled("Refresh", "UNAUTHENTICATED", "SESSION_REVOKED", 1),
        **_handled("Refresh", "UNAUTHENTICATED", "REFRESH_TOKEN_REUSED", 1),
        **_handled("Refresh", "UNAUTHENTICATED", "REFRESH_TOKEN_EXPIRED", 1),
        **_handled("RevokeSession", "OK", "", 1),
        **_handled("Logout", "OK", "", 1),
    }
    # Each ending's duration: the reused session lived the 11 s the clock moved.
    for kind, lived in (("revoked", 0), ("logout", 0), ("reuse", 11)):
        assert changes[("authsvc_session_duration_seconds_count", (("kind", kind),))] == 1
        assert changes.get(("authsvc_session_duration_seconds_sum", (("kind", kind),)), 0) == lived
    login_calls = (("method", "Login"), ("service", "authsvc.v1.AuthService"))
    assert changes[("authsvc_rpc_duration_seconds_count", login_calls)] == 6


def _handled(method: str, code: str, reason: str, count: int) -> dict[object, float]:
    labels = (
        ("code", code),
        ("method", method),
        ("reason", reason),
        ("service", "authsvc.v1.AuthService"),
    )
    return {("authsvc_rpc_handled_total", labels): count}


async def test_the_sweeper_counts_each_expired_session_once_as_idle_or_absolute(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(
        http_port="0",
        metrics="true",
        session_lifetime="10m",
        session_idle_timeout="1h",
        ended_session_retention="1d",
    )
    assert launched.server.http_port is not None
    port = launched.server.http_port
    await _register(launched.stub, "alice@example.com")
    # Its 10 min lifetime ends it before its idle hour; remember_me's 30 days do not.
    await login(launched.stub)
    await login(launched.stub, remember_me=True)
    before = await samples(port)

    clock.advance(timedelta(hours=2))
    await launched.server.sweeper.run_once()
    await launched.server.sweeper.run_once()
    # Past the retention: the tombstones go, and their endings are not counted again.
    clock.advance(timedelta(days=1))
    await launched.server.sweeper.run_once()

    changes = moved(before, await samples(port))
    ended = "authsvc_sessions_ended_total"
    assert changes[(ended, (("kind", "absolute_expiry"), ("reason", "absolute_timeout")))] == 1
    assert changes[(ended, (("kind", "idle_expiry"), ("reason", "idle_timeout")))] == 1
    duration = "authsvc_session_duration_seconds_sum"
    assert changes[(duration, (("kind", "absolute_expiry"),))] == 600
    assert changes[(duration, (("kind", "idle_expiry"),))] == 3600
    rows = "authsvc_sweeper_rows_deleted_total"
    assert changes[(rows, (("table", "revoked_sessions"),))] == 2
    assert (rows, (("table", "expired_sessions"),)) not in changes
    assert changes[("authsvc_sweeper_pass_duration_seconds_count", ())] == 3


async def test_a_sample_counts_live_sessions_and_users_by_how_many_they_have(
    launch: Launch,
) -> None:
    launched = await launch(http_port="0", metrics="true")
    assert launched.server.http_port is not None
    for email, sessions in (("one@example.com", 1), ("two@example.com", 2), ("three@x.org", 3)):
        await _register(launched.stub, email)
        for _ in range(sessions):
            last = await login(launched.stub, email)
    # An ended session is not live.
    await launched.stub.Logout(pb.LogoutRequest(), metadata=bearer(last.access_token))

    await launched.server.sampler.sample()

    scraped = await samples(launched.server.http_port)
    assert value(scraped, "authsvc_live_sessions") == 5
    assert value(scraped, "authsvc_users_with_live_sessions") == 3
    by_count = {
        band: value(scraped, "authsvc_users_by_live_sessions", sessions=band)
        for band in ("1", "2", "3-5", "6-10", "11+")
    }
    assert by_count == {"1": 1, "2": 2, "3-5": 0, "6-10": 0, "11+": 0}


async def test_process_gauges_are_read_at_scrape(launch: Launch) -> None:
    launched = await launch(http_port="0", metrics="true")
    assert launched.server.http_port is not None

    scraped = await samples(launched.server.http_port)

    assert value(scraped, "authsvc_signing_key_rotation_period_seconds") == 90 * 86400
    assert 0 <= value(scraped, "authsvc_signing_key_age_seconds") < 86400
    assert value(scraped, "authsvc_db_pool_connections", state="idle") >= 1
    assert value(scraped, "authsvc_revocation_feed_subscribers") == 0


async def test_metrics_are_404_unless_enabled(launch: Launch) -> None:
    launched = await launch(http_port="0")
    assert launched.server.http_port is not None

    status, _, _ = await scrape(launched.server.http_port)

    assert status == 404


async def test_metrics_without_an_http_port_refuse_to_start(pg_dsn: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_METRICS needs AUTHSVC_HTTP_PORT"):
        make_config(pg_dsn, metrics="true")


def _served_by(server: ServerProcess, event: str, request_id: str) -> int | None:
    """The pid of the worker whose log line `event` names this request."""
    for line in server.stderr_tail.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event and entry.get("request_id") == request_id:
                pid: int = entry["pid"]
                return pid
    return None


async def _by_which_worker(server: ServerProcess, event: str, request_id: str) -> int:
    async def logged() -> bool:
        return _served_by(server, event, request_id) is not None

    await eventually(logged)
    pid = _served_by(server, event, request_id)
    assert pid is not None
    return pid


async def _scrape_naming_the_worker(port: int) -> tuple[str, str]:
    """A scrape, after a JWKS request on the same connection (so to the same worker)
    whose access-log line names the worker (a scrape's is at DEBUG): that request's id,
    and the scrape's body."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), timeout=aiohttp.ClientTimeout(total=WAIT)
    ) as session:
        async with session.get(f"http://127.0.0.1:{port}/.well-known/jwks.json") as named:
            await named.read()
            request_id = named.headers["X-Request-Id"]
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            return request_id, await response.text()


async def test_one_scrape_of_either_worker_adds_up_both_workers_calls(
    new_database: NewDatabase,
) -> None:
    async with server_group() as group:
        server = await group.start_ready(
            await new_database(),
            AUTHSVC_WORKERS="2",
            AUTHSVC_HTTP_PORT="0",
            AUTHSVC_METRICS="true",
        )
        assert server.http_port is not None
        await _register(server.stub, "alice@example.com")
        logins_by_worker: dict[int, int] = {}

        async def both_served_logins() -> bool:
            # A new connection, which the kernel gives either worker.
            request_id = uuid.uuid4().hex
            async with grpc.aio.insecure_channel(
                f"127.0.0.1:{server.port}", options=_OWN_CONNECTION
            ) as channel:
                await auth_service_pb2_grpc.AuthServiceStub(channel).Login(
                    pb.LoginRequest(email="alice@example.com", password=PASSWORD),
                    metadata=(("x-request-id", request_id),),
                )
            pid = await _by_which_worker(server, "rpc", request_id)
            logins_by_worker[pid] = logins_by_worker.get(pid, 0) + 1
            return len(logins_by_worker) == 2

        await eventually(both_served_logins)
        logins = sum(logins_by_worker.values())
        scrapes: dict[int, Samples] = {}

        async def both_answered_scrapes() -> bool:
            assert server.http_port is not None
            request_id, body = await _scrape_naming_the_worker(server.http_port)
            scrapes[await _by_which_worker(server, "http_request", request_id)] = parsed(body)
            return len(scrapes) == 2

        await eventually(both_answered_scrapes)

    assert set(scrapes) == set(logins_by_worker)
    for scraped in scrapes.values():
        assert value(scraped, "authsvc_logins_total", outcome="ok") == logins
        assert value(scraped, "authsvc_sessions_created_total") == logins
        # Each worker's pool is counted once: two pools' idle connections, no pid label.
        assert value(scraped, "authsvc_database_up") == 1
