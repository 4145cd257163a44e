"""Webhooks: session events posted, signed, to a real HTTP receiver (an aiohttp server on a
free port), from the outbox a real server's PostgreSQL triggers write.

The servers run their worker's loop with a poll interval of an hour, so after its first
(empty) pass the tests drive it with `run_once()` under a FrozenClock, as the sweeper's
tests drive the sweeper; one test runs the loop itself."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from authsvc.core.clock import FrozenClock
from authsvc.core.models import SessionEndReason
from authsvc.store.pool import Pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from authsvc.webhook_worker import WebhookWorker
from tests.conftest import AdminLaunched, LaunchAdmin, NewDatabase, pool_on
from tests.helpers import (
    PASSWORD,
    Stub,
    bearer,
    error_info,
    login,
    refresh,
    refresh_failure,
    register,
    unused_port,
)
from tests.processes import authsvc_env, eventually, run_authsvc
from tests.runbook import ROOT, bash, fenced_after, pointed_at, set_once
from tests.webhook_receiver import Delivered, Receiver

pytestmark = pytest.mark.asyncio

SECRET = "whsec_" + base64.b64encode(b"webhook secret for the tests, 32b").decode()
EMAIL = "alice@example.com"
# The receiver's requests come within this; a bound, not a timing assertion.
WITHIN = 10.0

StartHooked = Callable[..., Awaitable[AdminLaunched]]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(unused_port())
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest_asyncio.fixture
async def webhook_pools() -> AsyncIterator[AsyncExitStack]:
    """Where the servers' pools close: set up before, so torn down after, the servers."""
    async with AsyncExitStack() as pools:
        yield pools


@pytest_asyncio.fixture
async def start_hooked(
    webhook_pools: AsyncExitStack, launch_admin: LaunchAdmin, pg_dsn: str
) -> StartHooked:
    """Factory: a server (and an operator's stubs) whose pool and worker post to `url`, as
    `authsvc serve` makes them from the same settings."""

    async def start(url: str, *, dsn: str = pg_dsn, **overrides: str) -> AdminLaunched:
        settings = {
            "webhook_urls": url,
            "webhook_secret": SECRET,
            "webhook_poll_interval": "1h",
            "registration_reveals_accounts": "true",
            # Addresses from x-forwarded-for, as behind a proxy.
            "trusted_proxies": "127.0.0.1/32",
            "database_url": dsn,
            **overrides,
        }
        server_pool = await webhook_pools.enter_async_context(
            pool_on(dsn, max_size=8, **cast(dict[str, Any], settings))
        )
        return await launch_admin(**cast(dict[str, str], {**settings, "server_pool": server_pool}))

    return start


@pytest_asyncio.fixture
async def hooked(start_hooked: StartHooked, receiver: Receiver) -> AdminLaunched:
    return await start_hooked(receiver.url)


def worker_of(launched: AdminLaunched) -> WebhookWorker:
    worker = launched.server.webhooks
    assert worker is not None
    return worker


def payload(delivered: Delivered) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(delivered.body)
    return parsed


async def deliver_all(launched: AdminLaunched) -> None:
    """Run the worker until nothing due is left."""
    while await worker_of(launched).run_once():
        pass


async def events_of(receiver: Receiver, count: int, event_type: str) -> list[dict[str, Any]]:
    delivered = await receiver.wait_for(count, within=WITHIN)
    return [p for p in map(payload, delivered) if p["type"] == event_type]


def from_address(address: str) -> tuple[tuple[str, str]]:
    return (("x-forwarded-for", address),)


async def register_from(stub: Stub, address: str) -> None:
    await stub.Register(
        pb.RegisterRequest(email=EMAIL, password=PASSWORD), metadata=from_address(address)
    )


async def login_from(stub: Stub, address: str) -> None:
    await stub.Login(
        pb.LoginRequest(email=EMAIL, password=PASSWORD), metadata=from_address(address)
    )


# --- signing -------------------------------------------------------------------------


async def test_a_delivery_verifies_with_the_standard_webhooks_library(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    await deliver_all(hooked)

    [delivered] = await receiver.wait_for(1, within=WITHIN)
    verified = Webhook(SECRET).verify(delivered.body, delivered.headers)

    assert verified["type"] == "session.created"
    assert verified["data"]["session_id"] == signed_in.session_id
    assert verified["data"]["user_id"] == signed_in.user_id


async def test_a_tampered_body_fails_verification(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    await register(hooked.stub, email=EMAIL)
    await deliver_all(hooked)
    [delivered] = await receiver.wait_for(1, within=WITHIN)

    tampered = delivered.body.replace(b'"new_device":true', b'"new_device":false')

    assert tampered != delivered.body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, delivered.headers)


async def test_a_delivery_signed_long_ago_fails_verification(
    start_hooked: StartHooked, receiver: Receiver, clock: FrozenClock
) -> None:
    # A replay of a captured delivery: its signed timestamp is what gives it away.
    clock.advance(timedelta(minutes=-10))
    hooked = await start_hooked(receiver.url)
    await register(hooked.stub, email=EMAIL)
    await deliver_all(hooked)
    [delivered] = await receiver.wait_for(1, within=WITHIN)

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(delivered.body, delivered.headers)


async def test_the_payload_carries_no_token(hooked: AdminLaunched, receiver: Receiver) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    await hooked.stub.Logout(pb.LogoutRequest(), metadata=bearer(signed_in.access_token))
    await deliver_all(hooked)

    delivered = await receiver.wait_for(2, within=WITHIN)

    for request in delivered:
        assert signed_in.refresh_token.encode() not in request.body
        assert signed_in.access_token.encode() not in request.body


# --- session.created -------------------------------------------------------------------


async def test_a_first_sign_in_is_from_a_new_device_and_address_and_a_repeat_is_not(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    await register_from(hooked.stub, "198.51.100.1")
    await login_from(hooked.stub, "198.51.100.1")
    await deliver_all(hooked)

    first, repeat = await events_of(receiver, 2, "session.created")

    assert (first["data"]["new_device"], first["data"]["new_address"]) == (True, True)
    assert (repeat["data"]["new_device"], repeat["data"]["new_address"]) == (False, False)


async def test_a_sign_in_from_another_address_is_new_address_on_a_known_device(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    await register_from(hooked.stub, "198.51.100.1")
    await login_from(hooked.stub, "198.51.100.2")
    await deliver_all(hooked)

    _, elsewhere = await events_of(receiver, 2, "session.created")

    assert elsewhere["data"]["ip_address"] == "198.51.100.2"
    assert (elsewhere["data"]["new_device"], elsewhere["data"]["new_address"]) == (False, True)


async def test_a_sign_in_from_another_browser_is_a_new_device_at_a_known_address(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
    )
    await register(hooked.stub, email=EMAIL)
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{hooked.server.port}", options=[("grpc.primary_user_agent", iphone)]
    ) as channel:
        await login(auth_service_pb2_grpc.AuthServiceStub(channel), email=EMAIL)
    await deliver_all(hooked)

    _, phone = await events_of(receiver, 2, "session.created")

    assert phone["data"]["device"]["type"] == "mobile"
    assert (phone["data"]["new_device"], phone["data"]["new_address"]) == (True, False)


async def test_another_users_sign_ins_do_not_make_a_device_known(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    await register(hooked.stub, email="bob@example.com")
    await register(hooked.stub, email=EMAIL)
    await deliver_all(hooked)

    _, alice = await events_of(receiver, 2, "session.created")

    assert (alice["data"]["new_device"], alice["data"]["new_address"]) == (True, True)


# --- session.refreshed_after_idle ------------------------------------------------------


async def test_a_refresh_after_the_idle_threshold_is_an_event(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    clock.advance(timedelta(hours=25))
    await refresh(hooked.stub, signed_in.refresh_token)
    await deliver_all(hooked)

    [idle] = await events_of(receiver, 2, "session.refreshed_after_idle")

    assert idle["data"]["session_id"] == signed_in.session_id
    assert idle["data"]["idle_seconds"] == 25 * 3600


async def test_a_refresh_within_the_idle_threshold_is_no_event(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    clock.advance(timedelta(hours=23))
    rotated = await refresh(hooked.stub, signed_in.refresh_token)
    # A marker after it: once the logout's event arrives, any refresh event would have too.
    await hooked.stub.Logout(pb.LogoutRequest(), metadata=bearer(rotated.access_token))
    await deliver_all(hooked)

    delivered = await receiver.wait_for(2, within=WITHIN)

    assert [payload(d)["type"] for d in delivered] == ["session.created", "session.ended"]


# --- session.ended ---------------------------------------------------------------------


async def ended_event(receiver: Receiver, count: int) -> dict[str, Any]:
    [ended] = await events_of(receiver, count, "session.ended")
    return ended


async def test_a_logout_is_an_ended_event_with_its_reason_and_the_user_as_ender(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    clock.advance(timedelta(minutes=3))
    await hooked.stub.Logout(pb.LogoutRequest(), metadata=bearer(signed_in.access_token))
    await deliver_all(hooked)

    ended = (await ended_event(receiver, 2))["data"]

    assert ended["session_id"] == signed_in.session_id
    assert ended["end_reason"] == "SESSION_END_REASON_USER_LOGOUT"
    assert ended["ended_at"] == (clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


async def test_an_operators_revocation_is_an_ended_event_naming_the_operator(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    await hooked.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=signed_in.user_id, reason="incident 7"),
        metadata=hooked.as_operator,
    )
    await deliver_all(hooked)

    ended = (await ended_event(receiver, 2))["data"]

    assert ended["end_reason"] == "SESSION_END_REASON_ADMIN_REVOKED"


async def test_refresh_token_reuse_is_an_ended_event(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)
    await refresh(hooked.stub, signed_in.refresh_token)
    clock.advance(timedelta(minutes=10))
    await refresh_failure(hooked.stub, signed_in.refresh_token)
    await deliver_all(hooked)

    ended = (await ended_event(receiver, 2))["data"]

    assert ended["end_reason"] == "SESSION_END_REASON_REFRESH_TOKEN_REUSE"


async def test_a_password_change_ends_the_other_sessions_with_that_reason(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    kept = await register(hooked.stub, email=EMAIL)
    other = await login(hooked.stub, email=EMAIL)
    await hooked.stub.ChangePassword(
        pb.ChangePasswordRequest(current_password=PASSWORD, new_password="a new long password"),
        metadata=bearer(kept.access_token),
    )
    await deliver_all(hooked)

    ended = (await ended_event(receiver, 3))["data"]

    assert ended["session_id"] == other.session_id
    assert ended["end_reason"] == "SESSION_END_REASON_PASSWORD_CHANGED"


async def session_ids(server_pool: Pool, count: int) -> list[str]:
    rows = await server_pool.fetch(
        "SELECT id FROM sessions ORDER BY created_at, id LIMIT $1", count
    )
    return [str(row["id"]) for row in rows]


@pytest.mark.parametrize("reason", list(SessionEndReason), ids=lambda r: r.value)
async def test_every_end_reason_is_named_as_auth_service_proto_names_it(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock, reason: SessionEndReason
) -> None:
    # Whatever statement ends a session (the sweeper's marking, a bulk revocation, an
    # eviction, ...) ends it by setting these columns: the trigger sees them all.
    signed_in = await register(hooked.stub, email=EMAIL)
    server_pool = hooked.server.pool
    await server_pool.execute(
        "UPDATE sessions SET revoked_at = $3, end_reason = $2, ended_by_kind = 'system'"
        " WHERE id = $1",
        signed_in.session_id,
        reason.value,
        clock.now(),
    )
    await deliver_all(hooked)

    ended = (await ended_event(receiver, 2))["data"]

    assert ended["end_reason"] == pb.SessionEndReason.Name(
        pb.SessionEndReason.Value(f"SESSION_END_REASON_{reason.name}")
    )
    assert ended["ended_by"]["kind"] == "system"


# --- delivery: retries, failures, at least once --------------------------------------


async def test_a_receiver_that_was_down_gets_the_events_once_it_is_back(
    start_hooked: StartHooked, clock: FrozenClock
) -> None:
    receiver = Receiver(unused_port())
    # The worker's own loop this time, polling often.
    hooked = await start_hooked(receiver.url, webhook_poll_interval="20ms")
    signed_in = await register(hooked.stub, email=EMAIL)
    # The first attempt is refused; the next is due after the schedule's first wait.
    await until_attempted(hooked.server.pool, 1)
    await receiver.start()
    try:
        clock.advance(timedelta(minutes=1))

        [delivered] = await receiver.wait_for(1, within=WITHIN)
    finally:
        await receiver.stop()

    assert payload(delivered)["data"]["session_id"] == signed_in.session_id


async def until_attempted(server_pool: Pool, attempts: int) -> None:
    """Until the outbox's delivery has settled `attempts` attempts."""

    async def settled() -> bool:
        return bool(await server_pool.fetchval(_ATTEMPTED, attempts))

    await eventually(settled)


_ATTEMPTED = (
    "SELECT count(*) FROM webhook_deliveries WHERE attempts >= $1 AND last_attempt_at IS NOT NULL"
)


async def failed_for_good(hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock) -> None:
    """Every attempt of the one delivery answered 503, over the whole schedule."""
    receiver.status = 503
    attempt = 0
    while await worker_of(hooked).run_once():
        attempt += 1
        await receiver.wait_for(attempt, within=WITHIN)
        clock.advance(timedelta(hours=13))


async def test_a_delivery_failed_for_good_is_listed_as_failed(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    await register(hooked.stub, email=EMAIL)
    await failed_for_good(hooked, receiver, clock)

    listed = await hooked.admin.ListWebhookDeliveries(
        admin_pb.ListWebhookDeliveriesRequest(), metadata=hooked.as_operator
    )

    [delivery] = listed.deliveries
    assert delivery.state == admin_pb.WEBHOOK_DELIVERY_STATE_FAILED
    assert (delivery.attempts, delivery.last_http_status) == (8, 503)
    assert delivery.event_type == "session.created"
    assert len(receiver.received) == 8


async def test_a_retried_failed_delivery_is_delivered_once_the_receiver_is_back(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    await register(hooked.stub, email=EMAIL)
    await failed_for_good(hooked, receiver, clock)
    [failed] = (
        await hooked.admin.ListWebhookDeliveries(
            admin_pb.ListWebhookDeliveriesRequest(), metadata=hooked.as_operator
        )
    ).deliveries
    receiver.status = 200

    retried = await hooked.admin.RetryWebhookDelivery(
        admin_pb.RetryWebhookDeliveryRequest(delivery_id=failed.delivery_id),
        metadata=hooked.as_operator,
    )
    await deliver_all(hooked)

    assert retried.delivery.state == admin_pb.WEBHOOK_DELIVERY_STATE_PENDING
    assert retried.delivery.attempts == 0
    delivered = await hooked.admin.ListWebhookDeliveries(
        admin_pb.ListWebhookDeliveriesRequest(state=admin_pb.WEBHOOK_DELIVERY_STATE_DELIVERED),
        metadata=hooked.as_operator,
    )
    assert [d.delivery_id for d in delivered.deliveries] == [failed.delivery_id]
    # The same webhook-id as every failed attempt: a receiver dedupes by it.
    assert receiver.received[-1].headers["webhook-id"] == failed.delivery_id


async def test_retrying_an_unknown_delivery_is_webhook_delivery_not_found(
    hooked: AdminLaunched,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooked.admin.RetryWebhookDelivery(
            admin_pb.RetryWebhookDeliveryRequest(
                delivery_id="0c1b9c3e-6f0d-4b7e-9d1c-3b2f1a0e9d8c"
            ),
            metadata=hooked.as_operator,
        )

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "WEBHOOK_DELIVERY_NOT_FOUND")


async def test_listing_pages_through_deliveries_newest_first(
    hooked: AdminLaunched, clock: FrozenClock
) -> None:
    for n in range(3):
        await register(hooked.stub, email=f"user{n}@example.com")
        clock.advance(timedelta(seconds=1))

    first = await hooked.admin.ListWebhookDeliveries(
        admin_pb.ListWebhookDeliveriesRequest(
            state=admin_pb.WEBHOOK_DELIVERY_STATE_PENDING, page_size=2
        ),
        metadata=hooked.as_operator,
    )
    second = await hooked.admin.ListWebhookDeliveries(
        admin_pb.ListWebhookDeliveriesRequest(
            state=admin_pb.WEBHOOK_DELIVERY_STATE_PENDING,
            page_size=2,
            page_token=first.next_page_token,
        ),
        metadata=hooked.as_operator,
    )

    listed = [*first.deliveries, *second.deliveries]
    instants = [d.created_at.ToDatetime() for d in listed]
    assert len(listed) == 3
    assert instants == sorted(instants, reverse=True)
    assert second.next_page_token == ""


async def test_a_page_token_is_refused_for_another_state(hooked: AdminLaunched) -> None:
    for n in range(2):
        await register(hooked.stub, email=f"user{n}@example.com")
    first = await hooked.admin.ListWebhookDeliveries(
        admin_pb.ListWebhookDeliveriesRequest(
            state=admin_pb.WEBHOOK_DELIVERY_STATE_PENDING, page_size=1
        ),
        metadata=hooked.as_operator,
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooked.admin.ListWebhookDeliveries(
            admin_pb.ListWebhookDeliveriesRequest(page_token=first.next_page_token),
            metadata=hooked.as_operator,
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_plain_service_may_not_list_deliveries(hooked: AdminLaunched) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hooked.admin.ListWebhookDeliveries(
            admin_pb.ListWebhookDeliveriesRequest(), metadata=hooked.as_service
        )

    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_sign_in_rolled_back_after_its_session_insert_leaves_no_event(
    start_hooked: StartHooked, receiver: Receiver, new_database: NewDatabase
) -> None:
    # Its own database: the fault is a trigger that fails the login's next statement
    # (its first refresh token), after the session row and its outbox row were written.
    dsn = await new_database(migrated=True)
    hooked = await start_hooked(receiver.url, dsn=dsn)
    await register(hooked.stub, email=EMAIL)
    await deliver_all(hooked)
    await receiver.wait_for(1, within=WITHIN)
    await hooked.server.pool.execute(
        """
        CREATE FUNCTION refuse_token() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'injected fault'; END; $$;
        CREATE TRIGGER refuse_token BEFORE INSERT ON refresh_tokens
            FOR EACH ROW EXECUTE FUNCTION refuse_token();
        """
    )

    with pytest.raises(grpc.aio.AioRpcError):
        await login(hooked.stub, email=EMAIL)

    assert await hooked.server.pool.fetchval("SELECT count(*) FROM sessions") == 1
    assert await hooked.server.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 1


async def test_without_webhooks_nothing_is_written_to_the_outbox(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    signed_in = await register(admin_server.stub, email=EMAIL)
    await admin_server.stub.Logout(pb.LogoutRequest(), metadata=bearer(signed_in.access_token))

    assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
    assert admin_server.server.webhooks is None


async def test_the_sweeper_deletes_deliveries_settled_past_the_retention(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    await register(hooked.stub, email=EMAIL)
    await deliver_all(hooked)
    await register(hooked.stub, email="bob@example.com")
    clock.advance(hooked.server.config.webhook_delivery_retention + timedelta(seconds=1))

    counts = await hooked.server.sweeper.run_once()

    assert counts is not None
    assert counts["webhook_deliveries"] == 1
    # Bob's delivery is pending: kept, however old. (The same pass marked both sessions
    # ended at their idle deadline, which queued their session.ended events.)
    kept = await hooked.server.pool.fetch(
        "SELECT event_type, state FROM webhook_deliveries ORDER BY event_type"
    )
    assert [(row["event_type"], row["state"]) for row in kept] == [
        ("session.created", "pending"),
        ("session.ended", "pending"),
        ("session.ended", "pending"),
    ]


async def test_deleting_the_user_erases_the_addresses_its_events_carry(
    hooked: AdminLaunched,
) -> None:
    signed_in = await register(hooked.stub, email=EMAIL)

    await hooked.admin.DeleteUser(
        admin_pb.DeleteUserRequest(user_id=signed_in.user_id, reason="erasure request"),
        metadata=hooked.as_operator,
    )

    rows = await hooked.server.pool.fetch("SELECT event_type, data FROM webhook_deliveries")
    assert sorted(row["event_type"] for row in rows) == ["session.created", "session.ended"]
    assert all("ip_address" not in row["data"] for row in rows)


async def test_the_webhook_grpcurl_examples_run_top_to_bottom(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    await register(hooked.stub, email=EMAIL)
    await failed_for_good(hooked, receiver, clock)
    [failed] = await hooked.server.pool.fetch("SELECT id FROM webhook_deliveries")
    operations = (ROOT / "docs" / "operations.md").read_text()
    script = pointed_at(fenced_after(operations, "webhooks-grpcurl"), hooked.server.port)
    script = set_once(script, "KEY", hooked.as_operator[0][1].removeprefix("Bearer "))

    status, stdout, stderr = await bash("set -euo pipefail\n" + script)

    assert status == 0, stderr
    # The failed listing, the retry's answer, then the pending listing: one delivery in each.
    assert stdout.count(f'"deliveryId": "{failed["id"]}"') == 3, stdout
    failed_at = stdout.find('"state": "WEBHOOK_DELIVERY_STATE_FAILED"')
    assert -1 < failed_at < stdout.find('"lastHttpStatus": 503'), stdout
    assert stdout.count('"state": "WEBHOOK_DELIVERY_STATE_PENDING"') == 2, stdout
    assert failed_at < stdout.find('"state": "WEBHOOK_DELIVERY_STATE_PENDING"'), stdout


async def test_a_worker_whose_pool_writes_no_events_says_so(
    launch_admin: LaunchAdmin, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # The shared test pool was made without the outbox settings, as an embedder might.
    caplog.set_level(logging.ERROR, logger="authsvc.webhook_worker")

    await launch_admin(webhook_urls=receiver.url, webhook_secret=SECRET)

    async def said() -> bool:
        return any(
            getattr(record, "event", "") == "webhook_outbox_unwired" for record in caplog.records
        )

    await eventually(said)


async def test_authsvc_admin_lists_a_failed_delivery_and_retries_it(
    hooked: AdminLaunched, receiver: Receiver, clock: FrozenClock
) -> None:
    await register(hooked.stub, email=EMAIL)
    await failed_for_good(hooked, receiver, clock)
    operator = {"AUTHSVC_OPERATOR_KEY": hooked.as_operator[0][1].removeprefix("Bearer ")}
    address = ("--address", f"127.0.0.1:{hooked.server.port}")

    listed = await run_authsvc(
        "admin", "list-webhook-deliveries", *address, env=authsvc_env(None, **operator)
    )
    [failed] = json.loads(listed.stdout)["deliveries"]
    retried = await run_authsvc(
        "admin",
        "retry-webhook-delivery",
        "--delivery-id",
        failed["delivery_id"],
        *address,
        env=authsvc_env(None, **operator),
    )

    assert (listed.code, retried.code) == (0, 0), listed.stderr + retried.stderr
    assert failed["state"] == "WEBHOOK_DELIVERY_STATE_FAILED"
    assert json.loads(retried.stdout)["delivery"]["state"] == "WEBHOOK_DELIVERY_STATE_PENDING"


async def test_a_hanging_endpoint_holds_no_connection_and_delays_no_call(
    hooked: AdminLaunched, receiver: Receiver
) -> None:
    await register(hooked.stub, email=EMAIL)
    receiver.held = asyncio.Event()
    posting = asyncio.create_task(worker_of(hooked).run_once())
    try:
        await receiver.wait_for(1, within=WITHIN)
        server_pool = hooked.server.pool

        in_use = server_pool.get_size() - server_pool.get_idle_size()
        # A sign-in while the post hangs: answered, and its own event written.
        await login(hooked.stub, email=EMAIL)
    finally:
        receiver.held.set()
        await posting

    assert in_use == 0
    assert await hooked.server.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 2


async def test_two_replicas_share_the_outbox_without_posting_an_event_twice(
    start_hooked: StartHooked, receiver: Receiver
) -> None:
    first = await start_hooked(receiver.url)
    second = await start_hooked(receiver.url)
    for n in range(20):
        await register(first.stub, email=f"user{n}@example.com")

    await asyncio.gather(deliver_all(first), deliver_all(second))

    delivered = await receiver.wait_for(20, within=WITHIN)
    assert len({d.headers["webhook-id"] for d in delivered}) == 20
    assert len(receiver.received) == 20
