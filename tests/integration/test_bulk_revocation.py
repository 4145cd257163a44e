"""AdminService.RevokeSessions on a real server and database: each filter field selects
exactly its sessions, a dry run changes nothing, a real run ends its matches through the
revocation feed and is idempotent, and only operators may call it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import OPERATOR, AdminLaunched, LaunchAdmin
from tests.helpers import PASSWORD, bearer, error_info, refresh, register
from tests.integration.test_metrics import samples, value

pytestmark = pytest.mark.asyncio

DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
# A rotated-in key signs two reload intervals (the default 60 s) after the rotation.
KEY_ACTIVATION_DELAY = timedelta(minutes=2)

SignIn = Callable[..., Awaitable[pb.LoginResponse]]


@pytest_asyncio.fixture
async def admin(launch_admin: LaunchAdmin) -> AdminLaunched:
    """An operator's server that takes the client address from x-forwarded-for."""
    return await launch_admin(trusted_proxies="127.0.0.0/8")


@pytest_asyncio.fixture
async def sign_in(admin: AdminLaunched) -> AsyncIterator[SignIn]:
    """Factory: a new session of `email` (registered on first use) from `ip` with
    `user_agent`."""
    channels: list[grpc.aio.Channel] = []
    registered: set[str] = set()

    async def sign_in(
        email: str = "alice@example.com", *, ip: str = "127.0.0.1", user_agent: str = DESKTOP
    ) -> pb.LoginResponse:
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{admin.server.port}", options=[("grpc.primary_user_agent", user_agent)]
        )
        channels.append(channel)
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        if email not in registered:
            await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))
            registered.add(email)
        response: pb.LoginResponse = await stub.Login(
            pb.LoginRequest(email=email, password=PASSWORD),
            metadata=(("x-forwarded-for", ip),),
        )
        return response

    yield sign_in
    for channel in channels:
        await channel.close()


async def _revoke(
    admin: AdminLaunched, reason: str = "incident 42", *, dry_run: bool = False, **fields: Any
) -> admin_pb.RevokeSessionsResponse:
    response: admin_pb.RevokeSessionsResponse = await admin.admin.RevokeSessions(
        admin_pb.RevokeSessionsRequest(
            filter=admin_pb.SessionFilter(**fields), reason=reason, dry_run=dry_run
        ),
        metadata=admin.as_operator,
    )
    return response


async def _live(pool: Pool) -> set[str]:
    rows = await pool.fetch("SELECT id FROM sessions WHERE revoked_at IS NULL")
    return {str(row["id"]) for row in rows}


async def _failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return error_info(caught.value)


def _kid(access_token: str) -> str:
    kid: str = jwt.get_unverified_header(access_token)["kid"]
    return kid


# --- one filter field at a time ---------------------------------------------


async def test_user_ids_end_only_those_users_sessions(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    alice = [await sign_in("alice@example.com"), await sign_in("alice@example.com")]
    bob = await sign_in("bob@example.com")
    carol = await sign_in("carol@example.com")

    answer = await _revoke(admin, user_ids=[alice[0].user_id, bob.user_id])

    assert answer.session_count == 3
    assert await _live(pool) == {carol.session_id}


async def test_created_after_ends_the_sessions_created_at_or_after_it(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool, clock: FrozenClock
) -> None:
    older = await sign_in()
    clock.advance(timedelta(minutes=10))
    cutoff = clock.now()
    at_cutoff = await sign_in()
    clock.advance(timedelta(minutes=10))
    newer = await sign_in()
    request = admin_pb.SessionFilter()
    request.created_after.FromDatetime(cutoff)

    answer = await _revoke(admin, created_after=request.created_after)

    assert answer.session_count == 2
    assert await _live(pool) == {older.session_id}
    assert {at_cutoff.session_id, newer.session_id}.isdisjoint(await _live(pool))


async def test_created_before_ends_the_sessions_created_before_it(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool, clock: FrozenClock
) -> None:
    await sign_in()
    clock.advance(timedelta(minutes=10))
    cutoff = clock.now()
    at_cutoff = await sign_in()
    request = admin_pb.SessionFilter()
    request.created_before.FromDatetime(cutoff)

    answer = await _revoke(admin, created_before=request.created_before)

    assert answer.session_count == 1
    assert await _live(pool) == {at_cutoff.session_id}


async def test_an_ipv4_cidr_ends_the_sessions_signed_in_from_that_range(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in(ip="203.0.113.5")
    await sign_in(ip="203.0.113.250")
    outside = await sign_in(ip="203.0.114.5")
    local = await sign_in()

    answer = await _revoke(admin, ip_cidr="203.0.113.0/24")

    assert answer.session_count == 2
    assert await _live(pool) == {outside.session_id, local.session_id}


async def test_an_ipv6_cidr_ends_the_sessions_signed_in_from_that_range(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in(ip="2001:db8::1")
    await sign_in(ip="2001:db8:ffff::7")
    outside = await sign_in(ip="2001:db9::1")
    ipv4 = await sign_in(ip="198.51.100.7")

    answer = await _revoke(admin, ip_cidr="2001:db8::/32")

    assert answer.session_count == 2
    assert await _live(pool) == {outside.session_id, ipv4.session_id}


async def test_a_bare_address_is_its_own_block(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in(ip="198.51.100.7")
    neighbour = await sign_in(ip="198.51.100.8")

    answer = await _revoke(admin, ip_cidr="198.51.100.7")

    assert answer.session_count == 1
    assert await _live(pool) == {neighbour.session_id}


@pytest.mark.parametrize(
    "cidr", ["203.0.113.0/33", "not-an-address", "2001:db8::/129", "fe80::1%eth0", "1.2.3"]
)
async def test_a_bad_cidr_is_invalid_field_and_ends_nothing(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool, cidr: str
) -> None:
    session = await sign_in(ip="203.0.113.5")

    code, reason, metadata = await _failure(_revoke(admin, ip_cidr=cidr))

    assert (code, reason, metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        "filter.ip_cidr",
    )
    assert await _live(pool) == {session.session_id}


async def test_user_agent_contains_is_case_insensitive_and_takes_percent_literally(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in(user_agent="ProbeBot 100% sure/1.0")
    # What `100%` would also match if `%` were a wildcard, and `_` if it were one.
    hundred = await sign_in(user_agent="probebot 100 percent/1.0")
    underscore = await sign_in(user_agent="probebot 1000/1.0")

    answer = await _revoke(admin, user_agent_contains="PROBEBOT 100%")
    by_underscore = await _revoke(admin, user_agent_contains="probebot 10_0")

    assert (answer.session_count, by_underscore.session_count) == (1, 0)
    assert await _live(pool) == {hundred.session_id, underscore.session_id}


async def test_device_types_end_only_sessions_of_those_devices(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in(user_agent=IPHONE)
    desktop = await sign_in(user_agent=DESKTOP)

    answer = await _revoke(admin, device_types=[pb.DEVICE_TYPE_MOBILE])

    assert answer.session_count == 1
    assert await _live(pool) == {desktop.session_id}


async def test_signing_key_id_ends_sessions_whose_latest_token_the_old_key_signed(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool, clock: FrozenClock
) -> None:
    stale = await sign_in()
    refreshed = await sign_in()
    old_kid = _kid(stale.access_token)
    new_key = await admin.server.keys.rotate()
    clock.advance(KEY_ACTIVATION_DELAY)
    rotated = await refresh(admin.stub, refreshed.refresh_token)
    fresh = await sign_in()
    assert (_kid(rotated.access_token), _kid(fresh.access_token)) == (new_key.kid,) * 2

    answer = await _revoke(admin, signing_key_id=old_kid)

    assert answer.session_count == 1
    assert await _live(pool) == {refreshed.session_id, fresh.session_id}


async def test_fields_combine_with_and(admin: AdminLaunched, sign_in: SignIn, pool: Pool) -> None:
    alice = await sign_in("alice@example.com", ip="203.0.113.5", user_agent=IPHONE)
    alice_elsewhere = await sign_in("alice@example.com", ip="198.51.100.7", user_agent=IPHONE)
    alice_desktop = await sign_in("alice@example.com", ip="203.0.113.6", user_agent=DESKTOP)
    bob = await sign_in("bob@example.com", ip="203.0.113.5", user_agent=IPHONE)

    answer = await _revoke(
        admin,
        user_ids=[alice.user_id],
        ip_cidr="203.0.113.0/24",
        device_types=[pb.DEVICE_TYPE_MOBILE],
    )

    assert answer.session_count == 1
    assert await _live(pool) == {
        alice_elsewhere.session_id,
        alice_desktop.session_id,
        bob.session_id,
    }


# --- the empty filter and the arguments --------------------------------------


async def test_an_empty_filter_without_match_all_is_invalid_field_and_ends_nothing(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    session = await sign_in()

    code, reason, metadata = await _failure(_revoke(admin))

    assert (code, reason, metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        "filter",
    )
    assert await _live(pool) == {session.session_id}


async def test_match_all_ends_every_live_session(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in("alice@example.com")
    await sign_in("bob@example.com")

    answer = await _revoke(admin, match_all=True)

    assert answer.session_count == 2
    assert await _live(pool) == set()


@pytest.mark.parametrize(
    ("reason", "fields", "field"),
    [
        ("", {"match_all": True}, "reason"),
        ("x" * 201, {"match_all": True}, "reason"),
        ("ok", {"user_ids": ["not-a-uuid"]}, "filter.user_ids"),
        ("ok", {"user_ids": [str(uuid.uuid4()) for _ in range(1001)]}, "filter.user_ids"),
        ("ok", {"device_types": [99]}, "filter.device_types"),
        ("ok", {"user_agent_contains": "x" * 201}, "filter.user_agent_contains"),
    ],
    ids=[
        "no reason",
        "a reason too long",
        "a user id that is no UUID",
        "too many user ids",
        "an unknown device type",
        "a user agent too long",
    ],
)
async def test_bad_arguments_are_invalid_field(
    admin: AdminLaunched, reason: str, fields: dict[str, Any], field: str
) -> None:
    code, error, metadata = await _failure(_revoke(admin, reason, **fields))

    assert (code, error, metadata.get("field")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        field,
    )


# --- the dry run --------------------------------------------------------------


async def test_a_dry_run_changes_nothing_but_its_own_audit_event(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    sessions = [await sign_in(ip="203.0.113.5") for _ in range(3)]
    feed_before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM revocation_log")
    audit_before = await pool.fetchval("SELECT max(id) FROM audit_events")

    answer = await _revoke(admin, dry_run=True, ip_cidr="203.0.113.0/24")

    assert answer.session_count == 3
    assert await _live(pool) == {session.session_id for session in sessions}
    assert await pool.fetchval("SELECT coalesce(max(id), 0) FROM revocation_log") == feed_before
    written = await pool.fetch(
        "SELECT event, detail FROM audit_events WHERE id > $1 ORDER BY id", audit_before
    )
    assert [(row["event"], row["detail"]) for row in written] == [
        (
            "admin_sessions_bulk_revoked",
            {
                "operator": OPERATOR,
                "via": "service_key",
                "filter": {"ip_cidr": "203.0.113.0/24"},
                "reason": "incident 42",
                "dry_run": True,
                "session_count": 3,
            },
        )
    ]
    for session in sessions:  # and each still refreshes
        await refresh(admin.stub, session.refresh_token)


async def test_a_dry_run_samples_twenty_matches_most_recently_active_first(
    admin: AdminLaunched, sign_in: SignIn, clock: FrozenClock
) -> None:
    signed_in = []
    for _ in range(22):
        signed_in.append(await sign_in(ip="203.0.113.5", user_agent=IPHONE))
        clock.advance(timedelta(seconds=1))
    await sign_in(ip="198.51.100.7")  # not a match

    answer = await _revoke(admin, dry_run=True, ip_cidr="203.0.113.0/24")

    assert answer.session_count == 22
    newest_first = [session.session_id for session in reversed(signed_in)][:20]
    assert [session.session_id for session in answer.sample] == newest_first
    first = answer.sample[0]
    assert (first.user_id, first.ip_address, first.device_type) == (
        signed_in[-1].user_id,
        "203.0.113.5",
        pb.DEVICE_TYPE_MOBILE,
    )


# --- the real run -------------------------------------------------------------


async def test_a_run_ends_its_matches_on_the_feed_as_the_operators(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    sessions = [await sign_in(ip="203.0.113.5") for _ in range(3)]
    feed_before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM revocation_log")

    answer = await _revoke(admin, "key leak drill", ip_cidr="203.0.113.0/24")

    ids = {uuid.UUID(session.session_id) for session in sessions}
    assert answer.session_count == 3
    fed = await pool.fetch(
        "SELECT session_id, reason FROM revocation_log WHERE id > $1", feed_before
    )
    assert {(row["session_id"], row["reason"]) for row in fed} == {
        (session_id, "bulk_revoked") for session_id in ids
    }
    ended = await pool.fetch(
        "SELECT end_reason, revoke_reason, ended_by_kind, ended_by_operator FROM sessions"
    )
    assert {tuple(row) for row in ended} == {
        ("bulk_revoked", "bulk_revoked: key leak drill", "operator", OPERATOR)
    }


async def test_a_run_counts_each_ending_as_bulk_revoked(
    launch_admin: LaunchAdmin,
) -> None:
    launched = await launch_admin(http_port="0", metrics="true")
    assert launched.server.http_port is not None
    for email in ("alice@example.com", "bob@example.com"):
        await register(launched.stub, email)
    before = await samples(launched.server.http_port)

    await _revoke(launched, match_all=True)

    after = await samples(launched.server.http_port)
    ended = "authsvc_sessions_ended_total"
    labels = {"kind": "revoked", "reason": "bulk_revoked"}
    assert value(after, ended, **labels) - value(before, ended, **labels) == 2


async def test_a_repeat_ends_nothing_and_each_call_is_audited_once_with_its_count(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    await sign_in(ip="203.0.113.5")
    await sign_in(ip="203.0.113.6")
    first = await _revoke(admin, ip_cidr="203.0.113.0/24")

    again = await _revoke(admin, ip_cidr="203.0.113.0/24")

    assert (first.session_count, again.session_count) == (2, 0)
    counts = await pool.fetch(
        "SELECT detail->'session_count' AS n, detail->'dry_run' AS dry FROM audit_events"
        " WHERE event = 'admin_sessions_bulk_revoked' ORDER BY id"
    )
    assert [(row["n"], row["dry"]) for row in counts] == [(2, False), (0, False)]


async def test_a_refresh_of_an_ended_session_is_session_revoked(
    admin: AdminLaunched, sign_in: SignIn
) -> None:
    session = await sign_in(ip="203.0.113.5")

    await _revoke(admin, ip_cidr="203.0.113.0/24")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refresh(admin.stub, session.refresh_token)
    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


# --- who may call it -----------------------------------------------------------


async def test_a_service_that_is_not_an_operator_is_refused_and_nothing_ends(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    session = await sign_in()

    code, reason, _ = await _failure(
        admin.admin.RevokeSessions(
            admin_pb.RevokeSessionsRequest(
                filter=admin_pb.SessionFilter(match_all=True), reason="x"
            ),
            metadata=admin.as_service,
        )
    )

    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_NOT_ALLOWED")
    assert await _live(pool) == {session.session_id}


async def test_a_users_access_token_is_refused_and_nothing_ends(
    admin: AdminLaunched, sign_in: SignIn, pool: Pool
) -> None:
    session = await sign_in()

    code, reason, _ = await _failure(
        admin.admin.RevokeSessions(
            admin_pb.RevokeSessionsRequest(
                filter=admin_pb.SessionFilter(match_all=True), reason="x", dry_run=True
            ),
            metadata=bearer(session.access_token),
        )
    )

    assert (code, reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    )
    assert await _live(pool) == {session.session_id}
    events = await pool.fetchval(
        "SELECT count(*) FROM audit_events WHERE event = 'admin_sessions_bulk_revoked'"
    )
    assert events == 0
