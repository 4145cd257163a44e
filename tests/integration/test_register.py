"""Register over a real socket against a real PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, error_info, refresh, register, validate

pytestmark = pytest.mark.asyncio


async def _count(pool: Pool, table: str) -> int:
    # Table names come from this module's own constants, never from input.
    count: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return count


async def _rejection(stub: Stub, **fields: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(pb.RegisterRequest(**fields))
    return error_info(caught.value)


async def test_register_returns_the_new_users_id(stub: Stub, pool: Pool) -> None:
    response = await register(stub)

    stored = await pool.fetchval("SELECT id FROM users WHERE email = 'alice@example.com'")
    assert uuid.UUID(response.user_id) == stored
    assert response.token_type == "Bearer"


async def test_register_access_token_validates_as_active_for_the_new_user(stub: Stub) -> None:
    registered = await register(stub)

    validated = await validate(stub, registered.access_token)

    assert validated.active
    assert validated.user_id == registered.user_id
    assert validated.session_id == registered.session_id


async def test_register_refresh_token_refreshes_the_new_session(stub: Stub) -> None:
    registered = await register(stub)

    refreshed = await refresh(stub, registered.refresh_token)

    assert refreshed.user_id == registered.user_id
    assert refreshed.session_id == registered.session_id
    assert refreshed.refresh_token != registered.refresh_token


@pytest.mark.parametrize(
    "second_email",
    ["alice@example.com", "ALICE@Example.COM"],
    ids=["same-case", "different-case"],
)
async def test_register_with_a_taken_email_is_email_taken(
    stub: Stub, pool: Pool, second_email: str
) -> None:
    await register(stub, email="alice@example.com")

    rejection = await _rejection(stub, email=second_email, password="another password 42")

    assert rejection[:2] == (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")
    assert await _count(pool, "users") == 1
    assert await _count(pool, "sessions") == 1


async def test_register_when_disabled_is_registration_disabled(launch: Launch, pool: Pool) -> None:
    stub = (await launch(registration_enabled="false")).stub

    rejection = await _rejection(stub, email="alice@example.com", password=PASSWORD)

    assert rejection[:2] == (grpc.StatusCode.PERMISSION_DENIED, "REGISTRATION_DISABLED")
    assert await _count(pool, "users") == 0


@pytest.mark.parametrize(
    "email",
    ["not-an-email", "alice@example", "al ice@example.com", "", "   ", "a" * 243 + "@example.com"],
    ids=["no-at", "no-dot-in-domain", "space", "empty", "blank", "255-chars"],
)
async def test_register_with_invalid_email_names_the_email_field(stub: Stub, email: str) -> None:
    rejection = await _rejection(stub, email=email, password=PASSWORD)

    assert rejection == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": "email"})


async def test_register_accepts_an_email_of_254_characters(stub: Stub) -> None:
    email = "a" * 242 + "@example.com"

    response = await register(stub, email=email)

    assert response.user_id


async def test_register_with_short_password_is_weak_password(stub: Stub) -> None:
    rejection = await _rejection(stub, email="alice@example.com", password="1234567")

    assert rejection == (grpc.StatusCode.INVALID_ARGUMENT, "WEAK_PASSWORD", {"field": "password"})


async def test_register_with_password_equal_to_email_is_weak_password(stub: Stub) -> None:
    rejection = await _rejection(stub, email="alice@example.com", password="Alice@Example.com")

    assert rejection == (grpc.StatusCode.INVALID_ARGUMENT, "WEAK_PASSWORD", {"field": "password"})


async def test_register_with_password_of_257_characters_names_the_password_field(
    stub: Stub,
) -> None:
    rejection = await _rejection(stub, email="alice@example.com", password="p" * 257)

    assert rejection == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", {"field": "password"})


async def test_register_accepts_a_password_of_256_characters(stub: Stub) -> None:
    response = await register(stub, password="pw" * 128)

    assert response.user_id


@pytest.mark.parametrize(
    "display_name",
    ["d" * 101, "Ali\x00ce", "Ali\nce", "Ali\u200bce"],
    ids=["101-chars", "nul", "newline", "zero-width-space"],
)
async def test_register_with_invalid_display_name_names_the_display_name_field(
    stub: Stub, display_name: str
) -> None:
    rejection = await _rejection(
        stub, email="alice@example.com", password=PASSWORD, display_name=display_name
    )

    assert rejection == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "display_name"},
    )


async def test_register_with_device_name_too_long_names_the_device_name_field(stub: Stub) -> None:
    rejection = await _rejection(
        stub, email="alice@example.com", password=PASSWORD, device_name="d" * 101
    )

    assert rejection == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "device_name"},
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "alice@example.com", "password": "short"},
        {"email": "alice@example.com", "password": PASSWORD, "display_name": "d" * 101},
        {"email": "alice@example.com", "password": PASSWORD, "device_name": "d" * 101},
    ],
    ids=["bad-email", "weak-password", "bad-display-name", "bad-device-name"],
)
async def test_rejected_register_writes_nothing(
    stub: Stub, pool: Pool, fields: dict[str, str]
) -> None:
    await _rejection(stub, **fields)

    assert [
        await _count(pool, "users"),
        await _count(pool, "sessions"),
        await _count(pool, "refresh_tokens"),
    ] == [0, 0, 0]
