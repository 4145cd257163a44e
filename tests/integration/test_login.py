"""Register and Login over a real socket against a real PostgreSQL."""

from __future__ import annotations

import threading

import argon2
import grpc
import pytest

from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import PASSWORD, Stub, error_info, login, register

pytestmark = pytest.mark.asyncio


class Verifications:
    """Every argon2 verify the server runs, as the parameters of the hash it checked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # verifies run on the hashing threads
        self.parameters: list[argon2.Parameters] = []

    def record(self, password_hash: str) -> None:
        with self._lock:
            self.parameters.append(argon2.extract_parameters(password_hash))


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Verifications:
    """argon2's own verify, counted: the server and its hasher stay the real ones."""
    seen = Verifications()
    real_verify = argon2.PasswordHasher.verify

    def counting_verify(
        hasher: argon2.PasswordHasher, password_hash: str | bytes, password: str | bytes
    ) -> bool:
        seen.record(password_hash if isinstance(password_hash, str) else password_hash.decode())
        return real_verify(hasher, password_hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", counting_verify)
    return seen


async def test_login_returns_a_bearer_token_pair_for_a_new_session(stub: Stub) -> None:
    registered = await register(stub)

    response = await login(stub)

    assert response.token_type == "Bearer"
    assert response.user_id == registered.user_id
    assert response.session_id
    assert response.session_id != registered.session_id
    assert response.access_token.count(".") == 2
    assert len(response.refresh_token) >= 43
    access_expiry = response.access_token_expires_at.ToDatetime()
    assert access_expiry < response.refresh_token_expires_at.ToDatetime()


async def test_login_email_is_case_insensitive(stub: Stub) -> None:
    await register(stub, email="Alice@Example.com")

    response = await login(stub, email="ALICE@example.COM")

    assert response.access_token


@pytest.mark.parametrize(
    ("email", "password"),
    [("alice@example.com", "wrong password"), ("nobody@example.com", PASSWORD)],
    ids=["wrong-password", "unknown-user"],
)
async def test_login_failure_is_invalid_credentials_whoever_asks(
    stub: Stub, email: str, password: str
) -> None:
    await register(stub)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(stub, email=email, password=password)

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    assert caught.value.details() == "invalid email or password"


@pytest.mark.parametrize(
    ("email", "password"),
    [("alice@example.com", "wrong password"), ("nobody@example.com", PASSWORD)],
    ids=["wrong-password", "unknown-user"],
)
async def test_failed_login_costs_one_verify_at_the_accounts_cost_whoever_asks(
    stub: Stub, pool: Pool, verifications: Verifications, email: str, password: str
) -> None:
    # Timing must not tell whether an account exists: an unknown email is verified
    # against a dummy hash as costly as a real one, exactly once.
    await register(stub)
    stored = await pool.fetchval("SELECT password_hash FROM users")
    verifications.parameters.clear()

    with pytest.raises(grpc.aio.AioRpcError):
        await login(stub, email=email, password=password)

    assert verifications.parameters == [argon2.extract_parameters(stored)]


async def test_login_without_email_names_the_field(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Login(pb.LoginRequest(password=PASSWORD))

    code, reason, metadata = error_info(caught.value)
    assert (code, reason, metadata) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "email"},
    )
