"""AuthClient: every RPC as a typed method returning frozen values."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
import pytest
from authsvc_client import AuthClient, DeviceType, LogoutScope, TokenPair

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
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
