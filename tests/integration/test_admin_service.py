"""AdminService's reads, RevokeUserSessions and ClearLoginThrottle on a real server and
database, called as an operator; each call leaves one audit row naming the operator."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import OPERATOR, AdminLaunched, LaunchAdmin
from tests.helpers import PASSWORD, bearer, error_info, login, register

pytestmark = pytest.mark.asyncio

UNKNOWN_USER = "00000000-0000-4000-8000-000000000000"


async def _failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    code, reason, _ = error_info(caught.value)
    return code, reason


async def _admin_rows(pool: Pool, event: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT user_id, ip_address, detail FROM audit_events WHERE event = $1 ORDER BY id", event
    )
    return [
        {
            "user_id": None if row["user_id"] is None else str(row["user_id"]),
            "ip_address": row["ip_address"],
            **row["detail"],
        }
        for row in rows
    ]


# --- GetUser ---------------------------------------------------------------


async def test_get_user_by_id_shows_the_account_and_its_live_session_count(
    admin_server: AdminLaunched,
) -> None:
    first = await register(admin_server.stub, display_name="Alice")
    await login(admin_server.stub)

    answer = await admin_server.admin.GetUser(
        admin_pb.GetUserRequest(user_id=first.user_id), metadata=admin_server.as_operator
    )

    user = answer.user
    assert (user.user_id, user.email, user.display_name, user.live_session_count) == (
        first.user_id,
        "alice@example.com",
        "Alice",
        2,
    )
    assert (user.HasField("disabled_at"), user.disabled_reason) == (False, "")


async def test_get_user_finds_an_account_by_any_spelling_of_its_email(
    admin_server: AdminLaunched,
) -> None:
    registered = await register(admin_server.stub)

    answer = await admin_server.admin.GetUser(
        admin_pb.GetUserRequest(email="  ALICE@Example.COM "), metadata=admin_server.as_operator
    )

    assert answer.user.user_id == registered.user_id


async def test_get_user_of_an_unknown_email_is_user_not_found_and_still_audited(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    failure = await _failure(
        admin_server.admin.GetUser(
            admin_pb.GetUserRequest(email="nobody@example.com"), metadata=admin_server.as_operator
        )
    )

    assert failure == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert await _admin_rows(pool, "admin_user_viewed") == [
        {
            "user_id": None,
            "ip_address": "127.0.0.1",
            "operator": OPERATOR,
            "via": "service_key",
            "by": "email",
            "found": False,
        }
    ]


@pytest.mark.parametrize(
    "request_",
    [admin_pb.GetUserRequest(), admin_pb.GetUserRequest(user_id="not-a-uuid")],
    ids=["neither id nor email", "an id that is not a UUID"],
)
async def test_get_user_refuses_a_request_naming_no_user(
    admin_server: AdminLaunched, request_: admin_pb.GetUserRequest
) -> None:
    failure = await _failure(
        admin_server.admin.GetUser(request_, metadata=admin_server.as_operator)
    )

    assert failure == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")


async def test_get_user_is_audited_with_the_operator_and_the_account(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    registered = await register(admin_server.stub)

    await admin_server.admin.GetUser(
        admin_pb.GetUserRequest(user_id=registered.user_id), metadata=admin_server.as_operator
    )

    assert await _admin_rows(pool, "admin_user_viewed") == [
        {
            "user_id": registered.user_id,
            "ip_address": "127.0.0.1",
            "operator": OPERATOR,
            "via": "service_key",
            "by": "user_id",
            "found": True,
        }
    ]


# --- ListUserSessions --------------------------------------------------------


async def test_list_user_sessions_pages_through_every_live_session_of_the_user(
    admin_server: AdminLaunched,
) -> None:
    signed_in = [await register(admin_server.stub)]
    signed_in += [await login(admin_server.stub) for _ in range(4)]
    await register(admin_server.stub, email="bob@example.com")
    user_id = signed_in[0].user_id

    seen: list[admin_pb.ListUserSessionsResponse] = []
    token = ""
    while True:
        page = await admin_server.admin.ListUserSessions(
            admin_pb.ListUserSessionsRequest(user_id=user_id, page_size=2, page_token=token),
            metadata=admin_server.as_operator,
        )
        seen.append(page)
        token = page.next_page_token
        if not token:
            break

    listed = [session for page in seen for session in page.sessions]
    assert [len(page.sessions) for page in seen] == [2, 2, 1]
    assert {s.session_id for s in listed} == {s.session_id for s in signed_in}
    assert not any(s.current for s in listed)


async def test_list_user_sessions_leaves_out_ended_sessions(admin_server: AdminLaunched) -> None:
    kept = await register(admin_server.stub)
    ended = await login(admin_server.stub)
    await admin_server.stub.Logout(pb.LogoutRequest(), metadata=bearer(ended.access_token))

    page = await admin_server.admin.ListUserSessions(
        admin_pb.ListUserSessionsRequest(user_id=kept.user_id), metadata=admin_server.as_operator
    )

    assert [s.session_id for s in page.sessions] == [kept.session_id]


async def test_list_user_sessions_refuses_a_page_token_of_another_user(
    admin_server: AdminLaunched,
) -> None:
    alice = await register(admin_server.stub)
    await login(admin_server.stub)
    bob = await register(admin_server.stub, email="bob@example.com")
    first = await admin_server.admin.ListUserSessions(
        admin_pb.ListUserSessionsRequest(user_id=alice.user_id, page_size=1),
        metadata=admin_server.as_operator,
    )

    failure = await _failure(
        admin_server.admin.ListUserSessions(
            admin_pb.ListUserSessionsRequest(
                user_id=bob.user_id, page_size=1, page_token=first.next_page_token
            ),
            metadata=admin_server.as_operator,
        )
    )

    assert failure == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_list_user_sessions_of_an_unknown_user_is_user_not_found(
    admin_server: AdminLaunched,
) -> None:
    failure = await _failure(
        admin_server.admin.ListUserSessions(
            admin_pb.ListUserSessionsRequest(user_id=UNKNOWN_USER),
            metadata=admin_server.as_operator,
        )
    )

    assert failure == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_list_user_sessions_is_audited_with_the_operator(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    registered = await register(admin_server.stub)

    await admin_server.admin.ListUserSessions(
        admin_pb.ListUserSessionsRequest(user_id=registered.user_id, page_size=10),
        metadata=admin_server.as_operator,
    )

    assert await _admin_rows(pool, "admin_sessions_listed") == [
        {
            "user_id": registered.user_id,
            "ip_address": "127.0.0.1",
            "operator": OPERATOR,
            "via": "service_key",
            "page_size": 10,
            "listed_count": 1,
        }
    ]


# --- RevokeUserSessions ------------------------------------------------------


async def test_revoke_user_sessions_ends_every_session_of_the_user_only(
    admin_server: AdminLaunched,
) -> None:
    first = await register(admin_server.stub)
    second = await login(admin_server.stub)
    bob = await register(admin_server.stub, email="bob@example.com")

    answer = await admin_server.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=first.user_id, reason="stolen laptop"),
        metadata=admin_server.as_operator,
    )

    refused = [
        await _failure(admin_server.stub.Refresh(pb.RefreshRequest(refresh_token=s.refresh_token)))
        for s in (first, second)
    ]
    bobs = await admin_server.stub.Refresh(pb.RefreshRequest(refresh_token=bob.refresh_token))
    assert answer.revoked_session_count == 2
    assert refused == [(grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")] * 2
    assert bobs.access_token


async def test_a_user_whose_sessions_an_operator_revoked_can_sign_in_again(
    admin_server: AdminLaunched,
) -> None:
    registered = await register(admin_server.stub)
    await admin_server.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=registered.user_id, reason="support call"),
        metadata=admin_server.as_operator,
    )

    again = await login(admin_server.stub)

    assert again.user_id == registered.user_id


async def test_revoke_user_sessions_is_audited_once_with_the_operator_and_the_reason(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    registered = await register(admin_server.stub)

    await admin_server.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=registered.user_id, reason="stolen laptop"),
        metadata=admin_server.as_operator,
    )

    rows = await _admin_rows(pool, "admin_sessions_revoked")
    assert rows == [
        {
            "user_id": registered.user_id,
            "ip_address": "127.0.0.1",
            "operator": OPERATOR,
            "via": "service_key",
            "reason": "stolen laptop",
            "revoked_session_count": 1,
            "revoked_session_ids": [registered.session_id],
        }
    ]


async def test_revoked_sessions_end_with_the_admin_revoked_reason(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    registered = await register(admin_server.stub)

    await admin_server.admin.RevokeUserSessions(
        admin_pb.RevokeUserSessionsRequest(user_id=registered.user_id, reason="stolen laptop"),
        metadata=admin_server.as_operator,
    )

    reasons = await pool.fetch(
        "SELECT reason FROM revocation_log WHERE session_id = $1",
        uuid.UUID(registered.session_id),
    )
    assert [row["reason"] for row in reasons] == ["admin_revoked"]


@pytest.mark.parametrize("reason", ["", "x" * 201], ids=["missing", "too long"])
async def test_revoke_user_sessions_requires_a_short_reason(
    admin_server: AdminLaunched, reason: str
) -> None:
    registered = await register(admin_server.stub)

    failure = await _failure(
        admin_server.admin.RevokeUserSessions(
            admin_pb.RevokeUserSessionsRequest(user_id=registered.user_id, reason=reason),
            metadata=admin_server.as_operator,
        )
    )

    assert failure == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")


async def test_revoke_user_sessions_of_an_unknown_user_is_user_not_found(
    admin_server: AdminLaunched,
) -> None:
    failure = await _failure(
        admin_server.admin.RevokeUserSessions(
            admin_pb.RevokeUserSessionsRequest(user_id=UNKNOWN_USER, reason="test"),
            metadata=admin_server.as_operator,
        )
    )

    assert failure == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


# --- ClearLoginThrottle ------------------------------------------------------

# Three failures lock an account (from an address, and from any), or an address.
_ACCOUNT_LIMITS = {
    "login_failures_per_account_and_ip": "3",
    "login_failures_per_account": "3",
    "login_failures_per_ip": "100",
}
_ADDRESS_LIMITS = {
    "login_failures_per_account_and_ip": "3",
    "login_failures_per_account": "100",
    "login_failures_per_ip": "3",
}


async def _fail_logins(admin: AdminLaunched, emails: list[str]) -> None:
    for email in emails:
        with pytest.raises(grpc.aio.AioRpcError):
            await login(admin.stub, email=email, password="wrong password!")


async def test_clearing_an_email_lets_its_locked_out_owner_sign_in(
    launch_admin: LaunchAdmin,
) -> None:
    admin = await launch_admin(**_ACCOUNT_LIMITS)
    await admin.stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))
    await _fail_logins(admin, ["alice@example.com"] * 3)
    locked = await _failure(login(admin.stub))

    await admin.admin.ClearLoginThrottle(
        admin_pb.ClearLoginThrottleRequest(email="Alice@Example.com"), metadata=admin.as_operator
    )

    signed_in = await login(admin.stub)
    assert locked == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert signed_in.access_token


async def test_clearing_an_address_lets_logins_from_it_through(
    launch_admin: LaunchAdmin,
) -> None:
    admin = await launch_admin(**_ADDRESS_LIMITS)
    await admin.stub.Register(pb.RegisterRequest(email="bob@example.com", password=PASSWORD))
    await _fail_logins(admin, [f"guess{n}@example.com" for n in range(3)])
    locked = await _failure(login(admin.stub, email="bob@example.com"))

    await admin.admin.ClearLoginThrottle(
        admin_pb.ClearLoginThrottleRequest(ip_address="127.0.0.1"), metadata=admin.as_operator
    )

    signed_in = await login(admin.stub, email="bob@example.com")
    assert locked == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert signed_in.access_token


async def test_clearing_an_address_also_lifts_the_lockouts_of_accounts_failed_from_it(
    launch_admin: LaunchAdmin,
) -> None:
    admin = await launch_admin(**_ADDRESS_LIMITS)
    await admin.stub.Register(pb.RegisterRequest(email="carol@example.com", password=PASSWORD))
    # Three failures fill both the address's bucket and carol's bucket from it.
    await _fail_logins(admin, ["carol@example.com"] * 3)
    locked = await _failure(login(admin.stub, email="carol@example.com"))

    await admin.admin.ClearLoginThrottle(
        admin_pb.ClearLoginThrottleRequest(ip_address="127.0.0.1"), metadata=admin.as_operator
    )

    signed_in = await login(admin.stub, email="carol@example.com")
    assert locked == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert signed_in.access_token


async def test_clearing_an_unthrottled_subject_succeeds_and_is_audited(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    await admin_server.admin.ClearLoginThrottle(
        admin_pb.ClearLoginThrottleRequest(ip_address="2001:db8::1"),
        metadata=admin_server.as_operator,
    )

    assert await _admin_rows(pool, "admin_login_throttle_cleared") == [
        {
            "user_id": None,
            "ip_address": "127.0.0.1",
            "operator": OPERATOR,
            "via": "service_key",
            "subject": "ip_address",
            "cleared_address": "2001:db8::1",
        }
    ]


@pytest.mark.parametrize(
    "request_",
    [
        admin_pb.ClearLoginThrottleRequest(),
        admin_pb.ClearLoginThrottleRequest(ip_address="not an address"),
        admin_pb.ClearLoginThrottleRequest(email="not an email"),
    ],
    ids=["no subject", "a malformed address", "a malformed email"],
)
async def test_clear_login_throttle_refuses_a_malformed_subject(
    admin_server: AdminLaunched, request_: admin_pb.ClearLoginThrottleRequest
) -> None:
    failure = await _failure(
        admin_server.admin.ClearLoginThrottle(request_, metadata=admin_server.as_operator)
    )

    assert failure == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")


# --- ListAuditEvents ---------------------------------------------------------


async def _all_events(
    admin: AdminLaunched, request: admin_pb.ListAuditEventsRequest
) -> list[list[admin_pb.AuditEvent]]:
    """Every page of the listing, as pages."""
    pages: list[list[admin_pb.AuditEvent]] = []
    while True:
        page = await admin.admin.ListAuditEvents(request, metadata=admin.as_operator)
        pages.append(list(page.events))
        if not page.next_page_token:
            return pages
        request.page_token = page.next_page_token


async def test_list_audit_events_pages_newest_first_through_one_users_events(
    admin_server: AdminLaunched,
) -> None:
    alice = await register(admin_server.stub)
    for _ in range(3):
        await login(admin_server.stub)
    await register(admin_server.stub, email="bob@example.com")

    pages = await _all_events(
        admin_server, admin_pb.ListAuditEventsRequest(user_id=alice.user_id, page_size=2)
    )

    events = [event for page in pages for event in page]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [e.event_type for e in events] == ["login_succeeded"] * 4 + ["user_registered"]
    assert {e.user_id for e in events} == {alice.user_id}
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)


async def test_list_audit_events_filters_by_event_type(admin_server: AdminLaunched) -> None:
    await register(admin_server.stub)
    with pytest.raises(grpc.aio.AioRpcError):
        await login(admin_server.stub, password="wrong password!")

    pages = await _all_events(
        admin_server,
        admin_pb.ListAuditEventsRequest(event_types=["login_failed", "user_registered"]),
    )

    assert [e.event_type for e in pages[0]] == ["login_failed", "user_registered"]


async def test_list_audit_events_filters_by_time_range(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    await register(admin_server.stub)
    start = clock.now()
    clock.advance(timedelta(hours=1))
    await login(admin_server.stub)
    clock.advance(timedelta(hours=1))
    await login(admin_server.stub)
    request = admin_pb.ListAuditEventsRequest(event_types=["login_succeeded"])
    request.occurred_after.FromDatetime(start + timedelta(minutes=30))
    request.occurred_before.FromDatetime(start + timedelta(minutes=90))

    pages = await _all_events(admin_server, request)

    assert [e.occurred_at.ToDatetime() for e in pages[0]] == [
        (start + timedelta(hours=1)).replace(tzinfo=None)
    ]


async def test_list_audit_events_shows_an_admin_event_with_its_operator(
    admin_server: AdminLaunched,
) -> None:
    registered = await register(admin_server.stub)
    await admin_server.admin.GetUser(
        admin_pb.GetUserRequest(user_id=registered.user_id), metadata=admin_server.as_operator
    )

    pages = await _all_events(
        admin_server, admin_pb.ListAuditEventsRequest(event_types=["admin_user_viewed"])
    )

    (event,) = pages[0]
    assert (event.user_id, event.detail["operator"], event.detail["via"]) == (
        registered.user_id,
        OPERATOR,
        "service_key",
    )


async def test_list_audit_events_is_audited_without_showing_itself(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    first = await admin_server.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(), metadata=admin_server.as_operator
    )

    rows = await _admin_rows(pool, "admin_audit_listed")
    assert list(first.events) == []
    assert rows == [
        {
            "user_id": None,
            "ip_address": "127.0.0.1",
            "operator": OPERATOR,
            "via": "service_key",
            "filter": {},
            "page_size": 50,
            "listed_count": 0,
        }
    ]


async def test_list_audit_events_refuses_a_page_token_with_other_filters(
    admin_server: AdminLaunched,
) -> None:
    for _ in range(3):
        await register(admin_server.stub, email=f"user{uuid.uuid4().hex[:8]}@example.com")
    first = await admin_server.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(page_size=1), metadata=admin_server.as_operator
    )

    failure = await _failure(
        admin_server.admin.ListAuditEvents(
            admin_pb.ListAuditEventsRequest(
                page_size=1, page_token=first.next_page_token, event_types=["login_failed"]
            ),
            metadata=admin_server.as_operator,
        )
    )

    assert failure == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_list_audit_events_caps_the_page_size(admin_server: AdminLaunched) -> None:
    page = await admin_server.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(page_size=5000), metadata=admin_server.as_operator
    )
    listed = await admin_server.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(event_types=["admin_audit_listed"]),
        metadata=admin_server.as_operator,
    )

    assert list(page.events) == []
    assert listed.events[0].detail["page_size"] == 1000
