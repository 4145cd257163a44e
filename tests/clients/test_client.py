"""AuthClient: every RPC as a typed method returning frozen values."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from authsvc_client import (
    AuthClient,
    DeviceType,
    FeedEvent,
    Heartbeat,
    InMemoryTokenStore,
    InvalidCredentials,
    LogoutScope,
    PasswordResetTokenInvalid,
    RateLimited,
    Revocation,
    ServiceCredentialsRequired,
    SessionEndReason,
    SessionRevoked,
    TokenPair,
    WeakPassword,
)

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.core.models import Operator, RequestOrigin
from tests.clients.conftest import ServiceKey
from tests.conftest import Launch
from tests.geoip_database import LOOPBACK, write_database
from tests.helpers import PASSWORD

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


async def _second_session(server: AuthServer, clock: FrozenClock) -> TokenPair:
    """Sign the same user in on another device (its own client)."""
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as other:
        return await other.login(EMAIL, PASSWORD)


async def test_register_returns_the_new_sessions_token_pair(
    client: AuthClient, clock: FrozenClock
) -> None:
    pair = await client.register(EMAIL, PASSWORD, display_name="Ada")

    assert isinstance(pair.user_id, uuid.UUID)
    assert isinstance(pair.session_id, uuid.UUID)
    assert pair.access_token_expires_at == clock.now() + timedelta(minutes=15)
    assert pair.token_type == "Bearer"


async def test_login_makes_the_new_pair_the_clients_tokens(client: AuthClient) -> None:
    await client.register(EMAIL, PASSWORD)

    pair = await client.login(EMAIL, PASSWORD)

    assert await client.tokens.tokens() == pair


async def test_refresh_rotates_the_refresh_token_in_the_same_session(client: AuthClient) -> None:
    registered = await client.register(EMAIL, PASSWORD)

    refreshed = await client.refresh()

    assert refreshed.refresh_token != registered.refresh_token
    assert refreshed.session_id == registered.session_id
    assert await client.tokens.tokens() == refreshed


async def test_list_sessions_marks_the_clients_session_current(
    client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    mine = await client.register(EMAIL, PASSWORD)
    await _second_session(server, clock)

    page = await client.list_sessions()

    assert {s.session_id for s in page.sessions if s.is_current} == {mine.session_id}
    assert len(page.sessions) == 2


async def test_list_sessions_describes_the_device_from_the_user_agent(
    server: AuthServer, clock: FrozenClock
) -> None:
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", user_agent=FIREFOX, now=clock.now
    ) as client:
        await client.register(EMAIL, PASSWORD, device_name="Work laptop")

        [session] = (await client.list_sessions()).sessions

    assert (session.device_type, session.browser, session.device_name) == (
        DeviceType.DESKTOP,
        "Firefox 133.0",
        "Work laptop",
    )


async def test_list_sessions_shows_the_country_and_city_of_the_login_address(
    launch: Launch, clock: FrozenClock, tmp_path: Path
) -> None:
    # The test database places loopback, where this client connects from.
    database = write_database(tmp_path / "cities.mmdb")
    server = (await launch(geoip_database=str(database))).server
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as client:
        await client.register(EMAIL, PASSWORD)

        [session] = (await client.list_sessions()).sessions

    assert (session.country, session.city) == (LOOPBACK.country, LOOPBACK.english_city)


async def test_iter_sessions_yields_every_session_across_pages(
    client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    mine = await client.register(EMAIL, PASSWORD)
    others = [await _second_session(server, clock) for _ in range(4)]

    seen = [s.session_id async for s in client.iter_sessions(page_size=2)]

    assert sorted(seen) == sorted([mine.session_id, *(o.session_id for o in others)])


async def test_revoke_session_removes_it_from_the_list(
    client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    await client.register(EMAIL, PASSWORD)
    other = await _second_session(server, clock)

    await client.revoke_session(other.session_id, reason="lost phone")

    assert other.session_id not in {s.session_id for s in (await client.list_sessions()).sessions}


async def test_change_password_ends_the_other_sessions_and_keeps_this_one(
    client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    mine = await client.register(EMAIL, PASSWORD)
    other = await _second_session(server, clock)

    ended = await client.change_password(PASSWORD, "a new and longer passphrase")

    assert ended == 1
    assert [s.session_id for s in (await client.list_sessions()).sessions] == [mine.session_id]
    async with AuthClient.connect(
        f"127.0.0.1:{server.port}", now=clock.now, store=InMemoryTokenStore(other)
    ) as ended_client:
        with pytest.raises(SessionRevoked):
            await ended_client.list_sessions()
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as fresh:
        with pytest.raises(InvalidCredentials):
            await fresh.login(EMAIL, PASSWORD)
        await fresh.login(EMAIL, "a new and longer passphrase")


async def test_change_password_raises_weak_password_and_changes_nothing(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)

    with pytest.raises(WeakPassword) as caught:
        await client.change_password(PASSWORD, "short")

    assert caught.value.field == "new_password"
    await client.login(EMAIL, PASSWORD)


async def test_change_password_with_wrong_current_passwords_is_rate_limited(
    client: AuthClient,
) -> None:
    await client.register(EMAIL, PASSWORD)
    for _ in range(5):
        with pytest.raises(InvalidCredentials):
            await client.change_password("not the password", "a new and longer passphrase")

    with pytest.raises(RateLimited):
        await client.change_password(PASSWORD, "a new and longer passphrase")


async def test_logout_of_this_session_forgets_the_tokens(client: AuthClient) -> None:
    await client.register(EMAIL, PASSWORD)

    revoked = await client.logout()

    assert revoked == 1
    assert await client.tokens.tokens() is None


async def test_logout_of_other_sessions_keeps_this_session(
    client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    mine = await client.register(EMAIL, PASSWORD)
    await _second_session(server, clock)

    revoked = await client.logout(LogoutScope.OTHER_SESSIONS)

    assert revoked == 1
    assert [s.session_id for s in (await client.list_sessions()).sessions] == [mine.session_id]


async def _reset_token(server: AuthServer) -> str:
    """A reset token for EMAIL, from the server's own use case (as an operator's
    CreatePasswordResetToken issues it)."""
    operator = Operator(name="client-tests", via="service_key", origin=RequestOrigin())
    issued = await server.password_resets.create_token(email=EMAIL, operator=operator)
    return issued.token


async def test_reset_password_sets_the_password_and_ends_every_session(
    client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    await client.register(EMAIL, PASSWORD)
    other = await _second_session(server, clock)

    revoked = await client.reset_password(await _reset_token(server), "a new passphrase")

    assert revoked == 2
    assert (await client.validate_token(other.access_token)).inactive_reason == "SESSION_REVOKED"
    await client.login(EMAIL, "a new passphrase")


async def test_reset_password_with_a_used_token_raises_password_reset_token_invalid(
    client: AuthClient, server: AuthServer
) -> None:
    await client.register(EMAIL, PASSWORD)
    token = await _reset_token(server)
    await client.reset_password(token, "a new passphrase")

    with pytest.raises(PasswordResetTokenInvalid):
        await client.reset_password(token, "another new passphrase")


async def test_validate_token_reports_an_active_token_and_whose_it_is(client: AuthClient) -> None:
    pair = await client.register(EMAIL, PASSWORD)

    answer = await client.validate_token(pair.access_token)

    assert answer.is_active
    assert (answer.user_id, answer.session_id) == (pair.user_id, pair.session_id)
    assert answer.expires_at == pair.access_token_expires_at
    assert answer.claims["sid"] == str(pair.session_id)


async def test_validate_token_reports_a_logged_out_session_inactive(client: AuthClient) -> None:
    pair = await client.register(EMAIL, PASSWORD)
    await client.logout()

    answer = await client.validate_token(pair.access_token)

    assert (answer.is_active, answer.inactive_reason) == (False, "SESSION_REVOKED")


async def test_get_jwks_publishes_the_key_of_the_access_token(client: AuthClient) -> None:
    pair = await client.register(EMAIL, PASSWORD)

    jwks = await client.get_jwks()

    kid = jwt.get_unverified_header(pair.access_token)["kid"]
    assert kid in {key["kid"] for key in jwks["keys"]}


async def test_token_pair_repr_hides_both_tokens(client: AuthClient) -> None:
    pair = await client.register(EMAIL, PASSWORD)

    shown = repr(pair)

    assert pair.access_token not in shown
    assert pair.refresh_token not in shown


# --- for internal services: the service key and the revocation feed --------------------


async def _until_heartbeat(client: AuthClient, *, after_cursor: int = 0) -> list[FeedEvent]:
    """What the feed sends up to and including its first heartbeat (the replay)."""
    events: list[FeedEvent] = []
    async for event in client.watch_revocations(after_cursor=after_cursor):
        events.append(event)
        if isinstance(event, Heartbeat):
            return events
    raise AssertionError(f"the feed ended before a heartbeat: {events}")


SERVICE_CALLS: dict[str, Callable[[AuthClient], Awaitable[Any]]] = {
    "GetJwks": lambda client: client.get_jwks(),
    "ValidateToken": lambda client: client.validate_token("not-a-jwt"),
}


@pytest.mark.parametrize("rpc", sorted(SERVICE_CALLS))
async def test_service_key_lets_the_client_call_a_server_that_requires_one(
    launch: Launch, service_key: ServiceKey, clock: FrozenClock, rpc: str
) -> None:
    launched = await launch(service_keys=service_key.entry, require_service_credentials="true")
    async with AuthClient.connect(
        f"127.0.0.1:{launched.server.port}", now=clock.now, service_key=service_key.key
    ) as service:
        await SERVICE_CALLS[rpc](service)


@pytest.mark.parametrize("key", ["", " leading-space", "two words", "line\nbreak", "caf\u00e9"])
async def test_service_key_metadata_cannot_carry_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ValueError, match="service_key") as caught:
        AuthClient.connect("127.0.0.1:1", service_key=key)

    assert not key.strip() or key.strip() not in str(caught.value)


async def test_watch_revocations_replays_a_logged_out_session_before_the_first_heartbeat(
    client: AuthClient, service_client: AuthClient
) -> None:
    pair = await client.register(EMAIL, PASSWORD)
    await client.logout()

    events = await _until_heartbeat(service_client)

    revocation, heartbeat = events
    assert isinstance(revocation, Revocation)
    assert (revocation.session_id, revocation.user_id, revocation.reason) == (
        pair.session_id,
        pair.user_id,
        SessionEndReason.USER_LOGOUT,
    )
    assert revocation.tokens_expire_by >= pair.access_token_expires_at
    assert isinstance(heartbeat, Heartbeat)
    assert heartbeat.cursor >= revocation.cursor


async def test_watch_revocations_after_a_cursor_sends_only_later_revocations(
    client: AuthClient, service_client: AuthClient
) -> None:
    await client.register(EMAIL, PASSWORD)
    await client.logout()
    seen = (await _until_heartbeat(service_client))[-1].cursor
    later = await client.login(EMAIL, PASSWORD)
    await client.logout()

    events = await _until_heartbeat(service_client, after_cursor=seen)

    assert [e.session_id for e in events if isinstance(e, Revocation)] == [later.session_id]


async def test_watch_revocations_streams_a_revocation_made_while_watching(
    client: AuthClient, service_client: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    await client.register(EMAIL, PASSWORD)
    other = await _second_session(server, clock)
    feed = service_client.watch_revocations()
    while not isinstance(await anext(feed), Heartbeat):
        pass
    await client.revoke_session(other.session_id)

    event = await anext(feed)
    while isinstance(event, Heartbeat):
        event = await anext(feed)
    await feed.aclose()

    assert isinstance(event, Revocation)
    assert (event.session_id, event.reason) == (other.session_id, SessionEndReason.USER_REVOKED)


async def test_watch_revocations_without_a_service_key_raises_service_credentials_required(
    client: AuthClient,
) -> None:
    with pytest.raises(ServiceCredentialsRequired) as caught:
        await _until_heartbeat(client)

    assert caught.value.reason == "SERVICE_CREDENTIALS_REQUIRED"
