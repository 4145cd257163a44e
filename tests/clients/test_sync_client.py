"""SyncAuthClient from plain (non-async) code, as a WSGI worker would use it.

The in-process test server runs on the session event loop, which does not run during a
synchronous test, so these tests talk to `serve` (`python -m authsvc serve` in a subprocess
on its own database, with the real clock). Server-side counts come from its access log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pyotp
import pytest
from authsvc_client import (
    InMemoryTokenStore,
    InvalidCredentials,
    PasswordResetTokenInvalid,
    RecoveryCode,
    SecondFactorRequired,
    SessionExpired,
    SessionPage,
    SyncAuthClient,
    WeakPassword,
)

from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc
from tests.clients.conftest import ServeProcess, ServiceKey
from tests.helpers import PASSWORD, bearer


@pytest.fixture
def email() -> str:
    """The subprocess's database is shared by every test that uses it: one account each."""
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
def sync_client(serve: ServeProcess) -> Iterator[SyncAuthClient]:
    with SyncAuthClient(serve.target) as client:
        yield client


def _stored_with_expired_access_token(serve: ServeProcess, email: str) -> InMemoryTokenStore:
    """A store holding a fresh session whose access token it records as expired a minute ago,
    as a CLI finds its token file after a long pause. (The subprocess runs on the real clock,
    so this is how a test makes a token look expired to the client without waiting.)"""
    with SyncAuthClient(serve.target) as setup:
        pair = setup.register(email, PASSWORD)
    return InMemoryTokenStore(
        replace(pair, access_token_expires_at=datetime.now(UTC) - timedelta(minutes=1))
    )


def test_sync_client_registers_and_lists_its_session(
    sync_client: SyncAuthClient, email: str
) -> None:
    registered = sync_client.register(email, PASSWORD)

    page = sync_client.list_sessions()

    assert [(s.session_id, s.is_current) for s in page.sessions] == [(registered.session_id, True)]


def test_sync_client_raises_invalid_credentials_for_a_wrong_password(
    sync_client: SyncAuthClient, email: str
) -> None:
    sync_client.register(email, PASSWORD)

    with pytest.raises(InvalidCredentials) as caught:
        sync_client.login(email, "not the password")

    assert caught.value.reason == "INVALID_CREDENTIALS"


def test_sync_client_refreshes_an_expired_access_token_before_the_call(
    serve: ServeProcess, email: str
) -> None:
    store = _stored_with_expired_access_token(serve, email)
    with SyncAuthClient(serve.target, store=store) as client:
        before = client.tokens()

        client.list_sessions()

        after = client.tokens()
    assert before is not None
    assert after is not None
    assert after.refresh_token != before.refresh_token


def test_sync_client_shared_by_threads_refreshes_once(serve: ServeProcess, email: str) -> None:
    store = _stored_with_expired_access_token(serve, email)
    with SyncAuthClient(serve.target, store=store) as client:
        start = serve.mark()
        with ThreadPoolExecutor(max_workers=20) as threads:
            outcomes = list(threads.map(lambda _: client.list_sessions(), range(40)))
        end = serve.mark()

    assert all(isinstance(o, SessionPage) for o in outcomes)
    assert serve.count_between(start, end, "Refresh") == 1


def test_sync_client_iter_sessions_walks_every_page(serve: ServeProcess, email: str) -> None:
    with SyncAuthClient(serve.target) as other:
        other.register(email, PASSWORD)
        for _ in range(3):
            other.login(email, PASSWORD)

    with SyncAuthClient(serve.target) as client:
        client.login(email, PASSWORD)
        seen = list(client.iter_sessions(page_size=2))

    assert len({s.session_id for s in seen}) == 5


def test_sync_client_session_revoked_elsewhere_raises_and_calls_back_once(
    serve: ServeProcess, sync_client: SyncAuthClient, email: str
) -> None:
    told: list[str] = []
    with SyncAuthClient(serve.target, on_session_expired=lambda e: told.append(e.reason)) as c:
        mine = c.register(email, PASSWORD)
        sync_client.login(email, PASSWORD)
        sync_client.revoke_session(mine.session_id)

        for _ in range(2):
            with pytest.raises(SessionExpired):
                c.list_sessions()

    assert told == ["SESSION_REVOKED"]


def test_sync_client_refuses_calls_after_close(serve: ServeProcess) -> None:
    client = SyncAuthClient(serve.target)
    client.close()

    with pytest.raises(RuntimeError):
        client.get_jwks()


def test_sync_client_sends_its_service_key_to_a_server_that_requires_one(
    service_serve: ServeProcess, service_key: ServiceKey, email: str
) -> None:
    with SyncAuthClient(service_serve.target) as user:
        pair = user.register(email, PASSWORD)

    with SyncAuthClient(service_serve.target, service_key=service_key.key) as service:
        answer = service.validate_token(pair.access_token)

    assert answer.is_active


def test_sync_client_changes_the_password_and_ends_the_other_sessions(
    serve: ServeProcess, sync_client: SyncAuthClient, email: str
) -> None:
    with SyncAuthClient(serve.target) as other:
        other.register(email, PASSWORD)
        sync_client.login(email, PASSWORD)

        ended = sync_client.change_password(PASSWORD, "a new and longer passphrase")

        with pytest.raises(SessionExpired):
            other.list_sessions()
    assert ended == 1
    assert len(sync_client.list_sessions().sessions) == 1
    with pytest.raises(InvalidCredentials):
        sync_client.login(email, PASSWORD)


def test_sync_client_change_password_raises_weak_password(
    sync_client: SyncAuthClient, email: str
) -> None:
    sync_client.register(email, PASSWORD)

    with pytest.raises(WeakPassword):
        sync_client.change_password(PASSWORD, "short")


def test_sync_client_resets_the_password_with_an_operators_token(
    sync_client: SyncAuthClient, serve: ServeProcess, service_key: ServiceKey, email: str
) -> None:
    sync_client.register(email, PASSWORD)
    with grpc.insecure_channel(serve.target) as channel:
        issued = admin_service_pb2_grpc.AdminServiceStub(channel).CreatePasswordResetToken(
            admin_pb.CreatePasswordResetTokenRequest(email=email),
            metadata=bearer(service_key.key),
        )

    revoked = sync_client.reset_password(issued.reset_token, "a new passphrase")

    assert revoked == 1
    sync_client.login(email, "a new passphrase")
    with pytest.raises(PasswordResetTokenInvalid):
        sync_client.reset_password(issued.reset_token, "another new passphrase")


def test_sync_client_enrols_a_totp_and_signs_in_again_in_two_steps(
    sync_client: SyncAuthClient, email: str
) -> None:
    sync_client.register(email, PASSWORD)
    enrolment = sync_client.enrol_totp("Phone")
    confirmation = sync_client.confirm_totp(enrolment.factor_id, pyotp.TOTP(enrolment.secret).now())
    with pytest.raises(SecondFactorRequired) as caught:
        sync_client.login(email, PASSWORD)

    pair = sync_client.complete_login(
        caught.value.pending, RecoveryCode(confirmation.recovery_codes[0])
    )

    assert sync_client.tokens() == pair
    [factor] = sync_client.list_factors().factors
    assert factor.factor_id == confirmation.factor.factor_id
