"""A subscribed TokenVerifier against `authsvc serve` replicas on one database (A and B):
revocations made through any replica reach a verifier on B, including those made while B
was down, and a verifier whose feed is cut fails closed, either way the caller chose."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from authsvc_client import (
    AuthClient,
    FeedEvent,
    RevocationFeedStale,
    SessionRevoked,
    TokenValidation,
    TokenVerifier,
    Unavailable,
    WhenStale,
)

from authsvc.v1 import auth_service_pb2 as pb
from tests.clients.conftest import ServiceKey
from tests.clients.test_verifier import refuses, until_current
from tests.conftest import NewDatabase
from tests.helpers import Registered, bearer, register
from tests.processes import ServerGroup, ServerProcess, eventually, server_group

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True, slots=True)
class Replicas:
    dsn: str
    group: ServerGroup
    a: ServerProcess  # where users sign in and out
    b: ServerProcess  # where the verifier subscribes
    settings: Mapping[str, str]

    async def restart_b(self) -> ServerProcess:
        """B again, on its port (the verifier's channel still points there), SERVING."""
        return await self.group.start_ready(self.dsn, self.b.port, **self.settings)


@pytest_asyncio.fixture
async def replicas(new_database: NewDatabase, service_key: ServiceKey) -> AsyncIterator[Replicas]:
    dsn = await new_database()
    settings = {"AUTHSVC_SERVICE_KEYS": service_key.entry}
    async with server_group() as group:
        a = await group.start_ready(dsn, **settings)
        b = await group.start_ready(dsn, **settings)
        yield Replicas(dsn, group, a, b, settings)


class SplitSource:
    """The feed from one replica, keys and ValidateToken from another: so a test can cut
    the feed while ValidateToken still answers."""

    def __init__(self, feed: AuthClient, answers: AuthClient) -> None:
        self._feed = feed
        self._answers = answers

    def watch_revocations(self, *, after_cursor: int = 0) -> AsyncGenerator[FeedEvent, None]:
        return self._feed.watch_revocations(after_cursor=after_cursor)

    async def get_jwks(self) -> Mapping[str, Any]:
        return await self._answers.get_jwks()

    async def validate_token(self, access_token: str) -> TokenValidation:
        return await self._answers.validate_token(access_token)


def _client(server: ServerProcess, service_key: ServiceKey) -> AuthClient:
    return AuthClient.connect(f"127.0.0.1:{server.port}", service_key=service_key.key)


@asynccontextmanager
async def subscribed_to(
    server: ServerProcess,
    service_key: ServiceKey,
    *,
    when_stale: WhenStale = WhenStale.REFUSE,
    answers: ServerProcess | None = None,
) -> AsyncIterator[TokenVerifier]:
    """A current verifier following `server`'s feed; keys and online answers come from
    `answers` when given, else from `server` too."""
    async with (
        _client(server, service_key) as feed,
        _client(answers or server, service_key) as other,
    ):
        source = feed if answers is None else SplitSource(feed, other)
        async with TokenVerifier(source, subscribe=True, when_stale=when_stale) as verifier:
            await until_current(verifier)
            yield verifier


async def logout(server: ServerProcess, user: Registered) -> None:
    await server.stub.Logout(pb.LogoutRequest(), metadata=bearer(user.access_token))


async def test_token_logged_out_through_one_replica_is_refused_by_a_verifier_on_another(
    replicas: Replicas, service_key: ServiceKey
) -> None:
    user = await register(replicas.a.stub)
    async with subscribed_to(replicas.b, service_key) as verifier:
        await verifier.verify(user.access_token)

        await logout(replicas.a, user)

        await eventually(lambda: refuses(verifier, user.access_token, SessionRevoked))


async def test_verifier_catches_up_on_a_logout_made_while_its_server_was_down(
    replicas: Replicas, service_key: ServiceKey
) -> None:
    user = await register(replicas.a.stub)
    async with subscribed_to(replicas.b, service_key) as verifier:
        await replicas.b.kill()
        await logout(replicas.a, user)

        await replicas.restart_b()

        # Refusing while stale (RevocationFeedStale), so SessionRevoked is the feed's.
        await eventually(lambda: refuses(verifier, user.access_token, SessionRevoked))
        assert verifier.is_feed_current


async def test_verifier_whose_feed_is_cut_refuses_every_token_when_told_to(
    replicas: Replicas, service_key: ServiceKey
) -> None:
    user = await register(replicas.a.stub)
    async with subscribed_to(replicas.b, service_key, when_stale=WhenStale.REFUSE) as verifier:
        await verifier.verify(user.access_token)

        await replicas.b.kill()

        await eventually(lambda: refuses(verifier, user.access_token, RevocationFeedStale))


async def test_verifier_whose_feed_is_cut_asks_validate_token_by_default(
    replicas: Replicas, service_key: ServiceKey
) -> None:
    user = await register(replicas.a.stub)
    other = await register(replicas.a.stub, email="bob@example.com")
    async with subscribed_to(
        replicas.b, service_key, when_stale=WhenStale.VALIDATE_ONLINE, answers=replicas.a
    ) as verifier:
        await replicas.b.kill()

        async def stale() -> bool:
            return not verifier.is_feed_current

        await eventually(stale)
        # The feed cannot bring this logout any more: only ValidateToken (on A) sees it.
        await logout(replicas.a, user)

        with pytest.raises(SessionRevoked):
            await verifier.verify(user.access_token)
        assert str((await verifier.verify(other.access_token)).session_id) == other.session_id


async def test_verifier_whose_only_server_is_down_fails_closed_by_default(
    replicas: Replicas, service_key: ServiceKey
) -> None:
    user = await register(replicas.a.stub)
    async with subscribed_to(
        replicas.b, service_key, when_stale=WhenStale.VALIDATE_ONLINE
    ) as verifier:
        await verifier.verify(user.access_token)  # the keys are cached: only the feed is cut

        await replicas.b.kill()

        await eventually(lambda: refuses(verifier, user.access_token, Unavailable))
