"""ListSessions over a real socket against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import grpc
import pytest
import pytest_asyncio

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, bearer, error_info, login, refresh, register

pytestmark = pytest.mark.asyncio

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1"
)
BOB = "bob@example.com"

Tokens = pb.RegisterResponse | pb.LoginResponse
Connect = Callable[..., Stub]


@pytest_asyncio.fixture
async def connect() -> AsyncIterator[Connect]:
    """Factory: a stub on a new channel to `port`, optionally with a user agent."""
    opened: list[grpc.aio.Channel] = []

    def open_stub(port: int, user_agent: str | None = None) -> Stub:
        options = [] if user_agent is None else [("grpc.primary_user_agent", user_agent)]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        opened.append(channel)
        return auth_service_pb2_grpc.AuthServiceStub(channel)

    yield open_stub
    for channel in opened:
        await channel.close()


async def sign_in(
    stub: Stub,
    count: int,
    *,
    email: str = "alice@example.com",
    clock: FrozenClock | None = None,
    step: timedelta = timedelta(minutes=1),
) -> list[Tokens]:
    """Register, then log in until the user has `count` sessions.

    With a clock, it moves by `step` before each login, so every session
    has its own created_at and last_active_at.
    """
    sessions: list[Tokens] = [await register(stub, email=email)]
    for _ in range(count - 1):
        if clock is not None:
            clock.advance(step)
        sessions.append(await login(stub, email=email))
    return sessions


async def list_sessions(
    stub: Stub, access_token: str, page_size: int = 0, page_token: str = ""
) -> pb.ListSessionsResponse:
    response: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=page_size, page_token=page_token),
        metadata=bearer(access_token),
    )
    return response


async def listed_ids(stub: Stub, access_token: str) -> list[str]:
    response = await list_sessions(stub, access_token)
    return [s.session_id for s in response.sessions]


async def listed_session(stub: Stub, access_token: str, session_id: str) -> pb.Session:
    response = await list_sessions(stub, access_token)
    found = [s for s in response.sessions if s.session_id == session_id]
    assert len(found) == 1, f"session {session_id} listed {len(found)} times"
    return found[0]


async def listed_after_login(stub: Stub, device: Stub) -> pb.Session:
    """The session a Login from `device` (a stub with its own user agent) starts, as listed."""
    signed_in = await login(device)
    return await listed_session(stub, signed_in.access_token, signed_in.session_id)


async def all_pages(stub: Stub, access_token: str, page_size: int) -> list[list[str]]:
    pages: list[list[str]] = []
    page_token = ""
    while True:
        response = await list_sessions(stub, access_token, page_size, page_token)
        pages.append([s.session_id for s in response.sessions])
        if not response.next_page_token:
            return pages
        assert len(pages) < 100, "pagination does not end"
        page_token = response.next_page_token


async def list_error(
    stub: Stub, metadata: tuple[tuple[str, str], ...], page_size: int = 0, page_token: str = ""
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListSessions(
            pb.ListSessionsRequest(page_size=page_size, page_token=page_token), metadata=metadata
        )
    return error_info(caught.value)


# --- what is listed -------------------------------------------------------


async def test_list_sessions_returns_only_the_callers_live_sessions(stub: Stub) -> None:
    alice = await sign_in(stub, 4)
    bob = await sign_in(stub, 2, email=BOB)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(alice[3].access_token))

    ids = await listed_ids(stub, alice[0].access_token)

    assert sorted(ids) == sorted(s.session_id for s in alice[:3])
    assert not set(ids) & {s.session_id for s in bob}


async def test_list_sessions_marks_only_the_callers_session_current(stub: Stub) -> None:
    alice = await sign_in(stub, 3)

    response = await list_sessions(stub, alice[1].access_token)

    current = {s.session_id: s.current for s in response.sessions}
    assert current == {
        alice[0].session_id: False,
        alice[1].session_id: True,
        alice[2].session_id: False,
    }


async def test_list_sessions_describes_each_session(
    launch: Launch, connect: Connect, clock: FrozenClock
) -> None:
    launched = await launch(session_idle_timeout="1h", session_lifetime="7d")
    stub = connect(launched.server.port, CHROME_MAC)
    await register(stub)
    clock.advance(timedelta(minutes=5))
    started = clock.now()
    signed_in = await login(stub, device_name="Work laptop")

    session = await listed_session(stub, signed_in.access_token, signed_in.session_id)

    assert session.created_at.ToDatetime(tzinfo=started.tzinfo) == started
    assert session.last_active_at.ToDatetime(tzinfo=started.tzinfo) == started
    assert session.idle_expires_at.ToDatetime(tzinfo=started.tzinfo) == started + timedelta(hours=1)
    assert session.expires_at.ToDatetime(tzinfo=started.tzinfo) == started + timedelta(days=7)
    assert session.device_name == "Work laptop"
    assert session.ip_address == "127.0.0.1"
    assert session.user_agent == CHROME_MAC
    assert session.current
    assert not session.remember_me


async def test_list_sessions_reports_remember_me_and_its_longer_lifetime(
    stub: Stub, clock: FrozenClock
) -> None:
    await register(stub)

    signed_in = await login(stub, remember_me=True)

    session = await listed_session(stub, signed_in.access_token, signed_in.session_id)
    assert session.remember_me
    assert session.expires_at.ToDatetime(tzinfo=clock.now().tzinfo) == clock.now() + timedelta(
        days=30
    )


# --- device ---------------------------------------------------------------


async def test_desktop_chrome_login_is_listed_as_desktop_chrome_on_mac(
    server: AuthServer, stub: Stub, connect: Connect
) -> None:
    await register(stub)

    session = await listed_after_login(stub, connect(server.port, CHROME_MAC))

    assert session.device_type == pb.DEVICE_TYPE_DESKTOP
    assert session.browser.startswith("Chrome")
    assert session.os.startswith("Mac OS X")


async def test_iphone_safari_login_is_listed_as_mobile_on_ios(
    server: AuthServer, stub: Stub, connect: Connect
) -> None:
    await register(stub)

    session = await listed_after_login(stub, connect(server.port, IPHONE_SAFARI))

    assert session.device_type == pb.DEVICE_TYPE_MOBILE
    assert session.os.startswith("iOS")
    assert session.user_agent == IPHONE_SAFARI


async def test_plain_grpc_client_login_is_listed_as_other(stub: Stub) -> None:
    await register(stub)

    session = await listed_after_login(stub, stub)

    assert session.device_type == pb.DEVICE_TYPE_OTHER
    assert session.user_agent.startswith("grpc-python")


# --- order ----------------------------------------------------------------


async def test_list_sessions_puts_the_newest_activity_first(stub: Stub, clock: FrozenClock) -> None:
    alice = await sign_in(stub, 3, clock=clock)

    ids = await listed_ids(stub, alice[0].access_token)

    assert ids == [alice[2].session_id, alice[1].session_id, alice[0].session_id]


async def test_refreshing_an_older_session_moves_it_to_the_top(
    stub: Stub, clock: FrozenClock
) -> None:
    alice = await sign_in(stub, 3, clock=clock)
    clock.advance(timedelta(minutes=1))
    refreshed = await refresh(stub, alice[0].refresh_token)

    response = await list_sessions(stub, refreshed.access_token)

    assert [s.session_id for s in response.sessions] == [
        alice[0].session_id,
        alice[2].session_id,
        alice[1].session_id,
    ]
    assert response.sessions[0].last_active_at.ToDatetime(tzinfo=clock.now().tzinfo) == (
        clock.now()
    )


# --- pagination -----------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [timedelta(minutes=1), timedelta(0)],
    ids=["distinct-times", "same-instant"],
)
async def test_list_sessions_pages_through_every_session_once(
    stub: Stub, clock: FrozenClock, step: timedelta
) -> None:
    alice = await sign_in(stub, 5, clock=clock, step=step)

    pages = await all_pages(stub, alice[0].access_token, page_size=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    listed = [session_id for page in pages for session_id in page]
    assert len(listed) == len(set(listed))
    assert set(listed) == {s.session_id for s in alice}


async def test_list_sessions_pages_keep_the_single_page_order(
    stub: Stub, clock: FrozenClock
) -> None:
    alice = await sign_in(stub, 5, clock=clock)
    whole = await listed_ids(stub, alice[0].access_token)

    pages = await all_pages(stub, alice[0].access_token, page_size=2)

    assert [session_id for page in pages for session_id in page] == whole


async def test_list_sessions_later_pages_leave_out_revoked_sessions(
    stub: Stub, clock: FrozenClock
) -> None:
    alice = await sign_in(stub, 5, clock=clock)
    caller = alice[4]
    # Newest first, two a page: [4, 3], [2, 1], [0]; session 1 sits on the second page.
    await stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=alice[1].session_id),
        metadata=bearer(caller.access_token),
    )

    pages = await all_pages(stub, caller.access_token, page_size=2)

    assert pages == [
        [alice[4].session_id, alice[3].session_id],
        [alice[2].session_id, alice[0].session_id],
    ]


async def test_list_sessions_last_page_has_no_next_page_token(stub: Stub) -> None:
    alice = await sign_in(stub, 3)
    first = await list_sessions(stub, alice[0].access_token, page_size=2)

    last = await list_sessions(
        stub, alice[0].access_token, page_size=2, page_token=first.next_page_token
    )

    assert first.next_page_token
    assert len(last.sessions) == 1
    assert last.next_page_token == ""


async def test_list_sessions_exact_fit_page_has_no_next_page_token(stub: Stub) -> None:
    alice = await sign_in(stub, 2)

    response = await list_sessions(stub, alice[0].access_token, page_size=2)

    assert len(response.sessions) == 2
    assert response.next_page_token == ""


async def test_list_sessions_page_size_zero_lists_all_when_under_the_default(
    stub: Stub,
) -> None:
    alice = await sign_in(stub, 5)

    response = await list_sessions(stub, alice[0].access_token, page_size=0)

    assert len(response.sessions) == 5
    assert response.next_page_token == ""


async def test_list_sessions_page_size_zero_means_fifty(stub: Stub) -> None:
    alice = await register(stub)
    await asyncio.gather(*(login(stub) for _ in range(50)))

    response = await list_sessions(stub, alice.access_token, page_size=0)

    assert len(response.sessions) == 50
    assert response.next_page_token


async def test_list_sessions_negative_page_size_is_invalid_argument(stub: Stub) -> None:
    alice = await register(stub)

    code, reason, metadata = await list_error(stub, bearer(alice.access_token), page_size=-1)

    assert (code, reason, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "page_size"},
    )


async def test_list_sessions_garbage_page_token_is_invalid_page_token(stub: Stub) -> None:
    alice = await register(stub)

    code, reason, _ = await list_error(stub, bearer(alice.access_token), page_token="garbage")

    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


async def test_list_sessions_edited_page_token_is_invalid_page_token(stub: Stub) -> None:
    """A client that edits the cursor's session id into a number gets a 4xx, not INTERNAL."""
    alice = await sign_in(stub, 3)
    token = (await list_sessions(stub, alice[0].access_token, page_size=1)).next_page_token
    body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    edited = {key: 12345 if _is_uuid(value) else value for key, value in body.items()}
    edited_token = base64.urlsafe_b64encode(json.dumps(edited).encode()).decode()

    code, reason, _ = await list_error(stub, bearer(alice[0].access_token), page_token=edited_token)

    assert edited != body
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


async def test_list_sessions_page_token_of_another_user_is_invalid_page_token(
    stub: Stub,
) -> None:
    alice = await sign_in(stub, 2)
    bob = await sign_in(stub, 2, email=BOB)
    alice_page = await list_sessions(stub, alice[0].access_token, page_size=1)

    code, reason, _ = await list_error(
        stub, bearer(bob[0].access_token), page_size=1, page_token=alice_page.next_page_token
    )

    assert alice_page.next_page_token
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")


# --- credentials ----------------------------------------------------------


async def test_list_sessions_without_authorization_is_missing_credentials(stub: Stub) -> None:
    await register(stub)

    code, reason, _ = await list_error(stub, ())

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


@pytest.mark.parametrize("header", ["Bearer", "Bearer   ", "bearer"])
async def test_list_sessions_with_an_empty_bearer_is_missing_credentials(
    stub: Stub, header: str
) -> None:
    await register(stub)

    code, reason, _ = await list_error(stub, (("authorization", header),))

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")


@pytest.mark.parametrize(
    "header", ["Bearer garbage", "Basic xyz"], ids=["bearer-garbage", "basic-scheme"]
)
async def test_list_sessions_with_unusable_authorization_is_token_invalid(
    stub: Stub, header: str
) -> None:
    await register(stub)

    code, reason, _ = await list_error(stub, (("authorization", header),))

    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


# --- client address -------------------------------------------------------


async def login_forwarded_for(stub: Stub, forwarded_for: str) -> pb.LoginResponse:
    response: pb.LoginResponse = await stub.Login(
        pb.LoginRequest(email="alice@example.com", password=PASSWORD),
        metadata=(("x-forwarded-for", forwarded_for),),
    )
    return response


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(stub: Stub) -> None:
    await register(stub)

    signed_in = await login_forwarded_for(stub, "203.0.113.7")

    session = await listed_session(stub, signed_in.access_token, signed_in.session_id)
    assert session.ip_address == "127.0.0.1"


async def start_behind_proxy(launch: Launch) -> Stub:
    """A stub on a server that trusts X-Forwarded-For from 127.0.0.1, i.e. from this test."""
    return (await launch(trusted_proxies="127.0.0.1/32")).stub


async def test_x_forwarded_for_from_a_trusted_proxy_records_the_client(launch: Launch) -> None:
    stub = await start_behind_proxy(launch)
    await register(stub)

    signed_in = await login_forwarded_for(stub, "203.0.113.7")

    session = await listed_session(stub, signed_in.access_token, signed_in.session_id)
    assert session.ip_address == "203.0.113.7"


@pytest.mark.parametrize(
    "forwarded_for",
    ["198.51.100.1, 203.0.113.7", "198.51.100.1, 203.0.113.7, 127.0.0.1"],
    ids=["two-clients", "behind-a-second-trusted-proxy"],
)
async def test_x_forwarded_for_records_the_rightmost_untrusted_hop(
    launch: Launch, forwarded_for: str
) -> None:
    stub = await start_behind_proxy(launch)
    await register(stub)

    signed_in = await login_forwarded_for(stub, forwarded_for)

    session = await listed_session(stub, signed_in.access_token, signed_in.session_id)
    assert session.ip_address == "203.0.113.7"


async def test_login_without_x_forwarded_for_behind_trusted_proxy_records_the_peer(
    launch: Launch,
) -> None:
    stub = await start_behind_proxy(launch)
    await register(stub)

    session = await listed_after_login(stub, stub)

    assert session.ip_address == "127.0.0.1"
