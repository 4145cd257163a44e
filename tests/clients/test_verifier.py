"""TokenVerifier: offline checks against the cached JWKS, and online ones with ValidateToken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from authsvc_client import (
    DEFAULT_LEEWAY,
    AuthClient,
    AuthsvcError,
    RevocationFeedStale,
    SessionExpired,
    SessionRevoked,
    TokenExpired,
    TokenInvalid,
    TokenPair,
    TokenVerifier,
    WhenStale,
)

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from tests.clients.conftest import RpcCounter, ServiceKey, minted_claims
from tests.conftest import Launch
from tests.helpers import ACCESS_TOKEN_TTL, CLOCK_SKEW, PASSWORD
from tests.processes import eventually

pytestmark = pytest.mark.asyncio

EMAIL = "ada@example.com"
PAST_EXPIRY = timedelta(minutes=16)


@pytest_asyncio.fixture
async def user(server: AuthServer, clock: FrozenClock) -> AsyncIterator[AuthClient]:
    """A signed-in user's client (the token holder, not the verifier's)."""
    async with AuthClient.connect(f"127.0.0.1:{server.port}", now=clock.now) as client:
        await client.register(EMAIL, PASSWORD)
        yield client


async def _pair(user: AuthClient) -> TokenPair:
    pair = await user.tokens.tokens()
    assert pair is not None
    return pair


def _verifier(client: AuthClient, clock: FrozenClock, **options: Any) -> TokenVerifier:
    return TokenVerifier(client, now=clock.now, **options)


@pytest_asyncio.fixture
async def subscribed(
    service_client: AuthClient, clock: FrozenClock
) -> AsyncIterator[TokenVerifier]:
    """A verifier following the feed, current. It refuses while stale, so a SessionRevoked
    from it comes from its deny-list, never from ValidateToken."""
    async with _verifier(
        service_client, clock, subscribe=True, when_stale=WhenStale.REFUSE
    ) as verifier:
        await until_current(verifier)
        yield verifier


async def until_current(verifier: TokenVerifier) -> None:
    async def current() -> bool:
        return verifier.is_feed_current

    await eventually(current)


async def refuses(verifier: TokenVerifier, token: str, error: type[AuthsvcError]) -> bool:
    """Whether `verifier` now refuses `token` with `error` (False if it accepts it, or
    refuses it only because its feed is stale)."""
    try:
        await verifier.verify(token)
    except error:
        return True
    except RevocationFeedStale:
        return False
    return False


def _forged(
    server: AuthServer,
    pair: TokenPair,
    *,
    headers: dict[str, Any] | None = None,
    algorithm: str | None = None,
    key: Any = None,
    **claims: Any,
) -> str:
    """A token signed with the server's own active key (so only the named part is wrong)."""
    kid, active_algorithm, private_key = server.keys.signing_key()
    body = {**minted_claims(server, pair), **claims}
    return jwt.encode(
        body,
        private_key if key is None else key,
        algorithm=algorithm or active_algorithm,
        headers={"kid": kid, "typ": "at+jwt", **(headers or {})},
    )


async def test_valid_token_yields_its_principal(
    client: AuthClient, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)

    principal = await _verifier(client, clock).verify(pair.access_token)

    assert (principal.user_id, principal.session_id, principal.expires_at) == (
        pair.user_id,
        pair.session_id,
        pair.access_token_expires_at,
    )
    assert principal.claims["jti"]


async def test_token_past_its_expiry_by_the_verifiers_clock_raises_token_expired(
    client: AuthClient, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)
    verifier = _verifier(client, clock)
    await verifier.verify(pair.access_token)
    clock.advance(PAST_EXPIRY)

    with pytest.raises(TokenExpired) as caught:
        await verifier.verify(pair.access_token)

    assert caught.value.reason == "TOKEN_EXPIRED"


async def test_garbage_raises_token_invalid(client: AuthClient, clock: FrozenClock) -> None:
    with pytest.raises(TokenInvalid) as caught:
        await _verifier(client, clock).verify("not-a-jwt")

    assert (caught.value.reason, caught.value.message) == (
        "TOKEN_INVALID",
        "access token is malformed",
    )


@pytest.mark.parametrize(
    ("forgery", "message"),
    [
        pytest.param({"aud": "billing"}, "access token is for another audience", id="audience"),
        pytest.param(
            {"iss": "https://elsewhere.example"}, "access token is from another issuer", id="issuer"
        ),
        # The classic confusion: HMAC "signed" with a value the attacker knows, under a real kid.
        pytest.param(
            {"algorithm": "HS256", "key": "known-to-everyone" * 2},
            "access token signature is invalid",
            id="algorithm-other-than-its-keys",
        ),
        pytest.param(
            {"algorithm": "none", "key": ""}, "access token signature is invalid", id="unsigned"
        ),
        pytest.param(
            {"headers": {"kid": "not-a-key-of-ours"}},
            "access token is signed by an unknown key",
            id="unknown-key",
        ),
    ],
)
async def test_forged_token_raises_token_invalid_naming_what_is_wrong(
    client: AuthClient,
    user: AuthClient,
    server: AuthServer,
    clock: FrozenClock,
    forgery: dict[str, Any],
    message: str,
) -> None:
    token = _forged(server, await _pair(user), **forgery)

    with pytest.raises(TokenInvalid) as caught:
        await _verifier(client, clock).verify(token)

    assert caught.value.message == message


async def test_verifier_checks_the_configured_audience(
    client: AuthClient, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)

    with pytest.raises(TokenInvalid):
        await _verifier(client, clock, audience="billing").verify(pair.access_token)


async def test_token_that_is_not_an_access_token_raises_token_invalid(
    client: AuthClient, user: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    token = _forged(server, await _pair(user), headers={"typ": "JWT"})

    with pytest.raises(TokenInvalid):
        await _verifier(client, clock).verify(token)


async def test_token_with_another_tokens_signature_raises_token_invalid_naming_the_signature(
    client: AuthClient, user: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    pair = await _pair(user)
    signed_input = _forged(server, pair, jti="one").rpartition(".")[0]
    signature = _forged(server, pair, jti="another").rpartition(".")[2]

    with pytest.raises(TokenInvalid) as caught:
        await _verifier(client, clock).verify(f"{signed_input}.{signature}")

    assert caught.value.message == "access token signature is invalid"


async def test_token_of_a_new_key_verifies_after_rotation(
    client: AuthClient, user: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    verifier = _verifier(client, clock)
    await verifier.verify((await _pair(user)).access_token)
    await server.keys.rotate()
    rotated = await user.refresh()

    principal = await verifier.verify(rotated.access_token)

    assert principal.session_id == rotated.session_id


async def test_token_of_the_retired_key_still_verifies_after_rotation(
    client: AuthClient, user: AuthClient, server: AuthServer, clock: FrozenClock
) -> None:
    verifier = _verifier(client, clock)
    before = await _pair(user)
    await server.keys.rotate()
    await verifier.verify((await user.refresh()).access_token)

    principal = await verifier.verify(before.access_token)

    assert principal.session_id == before.session_id


async def test_unknown_kids_refetch_the_jwks_once_per_interval(
    client: AuthClient,
    user: AuthClient,
    server: AuthServer,
    clock: FrozenClock,
    server_rpcs: RpcCounter,
) -> None:
    pair = await _pair(user)
    verifier = _verifier(client, clock)
    await verifier.verify(pair.access_token)

    for n in range(5):
        with pytest.raises(TokenInvalid):
            await verifier.verify(_forged(server, pair, headers={"kid": f"unknown-{n}"}))

    assert server_rpcs("GetJwks") == 2


async def test_unknown_kid_refetches_again_once_the_interval_has_passed(
    client: AuthClient,
    user: AuthClient,
    server: AuthServer,
    clock: FrozenClock,
    server_rpcs: RpcCounter,
) -> None:
    pair = await _pair(user)
    verifier = _verifier(client, clock, jwks_refetch_interval=timedelta(seconds=30))
    await verifier.verify(pair.access_token)
    with pytest.raises(TokenInvalid):
        await verifier.verify(_forged(server, pair, headers={"kid": "unknown-1"}))
    clock.advance(timedelta(seconds=30))

    with pytest.raises(TokenInvalid):
        await verifier.verify(_forged(server, pair, headers={"kid": "unknown-2"}))

    assert server_rpcs("GetJwks") == 3


async def test_subscribed_verification_refuses_a_logged_out_sessions_token(
    subscribed: TokenVerifier, user: AuthClient, server_rpcs: RpcCounter
) -> None:
    pair = await _pair(user)
    await subscribed.verify(pair.access_token)

    await user.logout()

    await eventually(lambda: refuses(subscribed, pair.access_token, SessionRevoked))
    assert server_rpcs("ValidateToken") == 0


async def test_subscribed_verifier_tells_a_kept_open_call_that_its_session_ended(
    subscribed: TokenVerifier, user: AuthClient
) -> None:
    principal = await subscribed.verify((await _pair(user)).access_token)
    assert not subscribed.is_session_revoked(principal.session_id)

    await user.logout()

    async def told() -> bool:
        return subscribed.is_session_revoked(principal.session_id)

    await eventually(told)


async def test_subscribed_verifier_forgets_a_session_once_its_tokens_have_all_expired(
    subscribed: TokenVerifier, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)
    await user.logout()

    async def denied() -> bool:
        return subscribed.is_session_revoked(pair.session_id)

    await eventually(denied)
    # Past tokens_expire_by (revoked + TTL + the server's skew) and the verifier's leeway.
    clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW + DEFAULT_LEEWAY + timedelta(seconds=1))

    async def forgotten() -> bool:
        return not await denied()

    await eventually(forgotten)
    with pytest.raises(TokenExpired):
        await subscribed.verify(pair.access_token)


async def test_subscribed_verifier_refuses_a_session_that_ended_before_it_started(
    service_client: AuthClient, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)
    await user.logout()
    verifier = _verifier(service_client, clock, subscribe=True, when_stale=WhenStale.REFUSE)

    async with verifier:
        await until_current(verifier)
        with pytest.raises(SessionRevoked) as caught:
            await verifier.verify(pair.access_token)

    assert caught.value.reason == "SESSION_REVOKED"


async def test_subscribed_verifier_accepts_a_live_sessions_token_without_asking_the_service(
    subscribed: TokenVerifier, user: AuthClient, server_rpcs: RpcCounter
) -> None:
    pair = await _pair(user)

    principal = await subscribed.verify(pair.access_token)

    assert principal.session_id == pair.session_id
    assert server_rpcs("ValidateToken") == 0


async def test_subscribed_verifier_whose_cursor_expired_starts_again_from_a_snapshot(
    launch: Launch, clock: FrozenClock, service_key: ServiceKey
) -> None:
    watched = await launch(service_keys=service_key.entry)
    other = await launch(service_keys=service_key.entry)
    port = watched.server.port
    async with (
        AuthClient.connect(f"127.0.0.1:{port}", now=clock.now, service_key=service_key.key) as feed,
        AuthClient.connect(f"127.0.0.1:{other.server.port}", now=clock.now) as user,
        _verifier(feed, clock, subscribe=True, when_stale=WhenStale.REFUSE) as verifier,
    ):
        seen = await user.register(EMAIL, PASSWORD)
        await until_current(verifier)
        await user.logout()
        await eventually(lambda: refuses(verifier, seen.access_token, SessionRevoked))
        # While the verifier's server is away, a session ends and the log is swept past it:
        # the verifier's cursor no longer reaches what followed it. Then another ends.
        await watched.server.stop(None)
        await user.login(EMAIL, PASSWORD)
        await user.logout()
        clock.advance(watched.server.config.effective_revocation_retention + timedelta(seconds=1))
        await other.server.sweeper.run_once()
        latest = await user.login(EMAIL, PASSWORD)
        await user.logout()

        await launch(service_keys=service_key.entry, port=str(port))

        await eventually(lambda: refuses(verifier, latest.access_token, SessionRevoked))


async def test_subscribed_verifier_before_its_first_heartbeat_asks_validate_token(
    service_client: AuthClient, user: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    pair = await _pair(user)
    # Not started: it has heard no heartbeat, like one whose feed has not caught up yet.
    verifier = _verifier(service_client, clock, subscribe=True)

    principal = await verifier.verify(pair.access_token)

    assert principal.session_id == pair.session_id
    assert server_rpcs("ValidateToken") == 1


async def test_subscribed_verifier_before_its_first_heartbeat_refuses_when_told_to(
    service_client: AuthClient, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)
    verifier = _verifier(service_client, clock, subscribe=True, when_stale=WhenStale.REFUSE)

    with pytest.raises(RevocationFeedStale) as caught:
        await verifier.verify(pair.access_token)

    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_closed_subscribed_verifier_leaves_no_task_behind(subscribed: TokenVerifier) -> None:
    before = asyncio.all_tasks()

    await subscribed.aclose()

    assert {task.get_name() for task in before - asyncio.all_tasks()} == {"authsvc-revocation-feed"}
    assert not subscribed.is_feed_current


async def test_online_verification_of_a_revoked_sessions_token_raises_session_revoked(
    client: AuthClient, user: AuthClient, clock: FrozenClock
) -> None:
    pair = await _pair(user)
    await user.logout()

    with pytest.raises(SessionRevoked) as caught:
        await _verifier(client, clock, online=True).verify(pair.access_token)

    assert isinstance(caught.value, SessionExpired)
    assert caught.value.reason == "SESSION_REVOKED"


async def test_online_verification_accepts_a_live_sessions_token(
    client: AuthClient, user: AuthClient, clock: FrozenClock, server_rpcs: RpcCounter
) -> None:
    pair = await _pair(user)

    principal = await _verifier(client, clock).verify(pair.access_token, online=True)

    assert principal.session_id == pair.session_id
    assert server_rpcs("ValidateToken") == 1
