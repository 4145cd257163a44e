"""Register over a real socket against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from authsvc.app import (
    build_key_ring,
    build_login_throttle,
    build_refusal_log,
    build_session_service,
)
from authsvc.config import Config
from authsvc.core.clock import FrozenClock
from authsvc.core.models import DeviceInfo, DeviceType
from authsvc.domain.passwords import Argon2Hasher, HashSlot, Lane
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import (
    PASSWORD,
    Stub,
    backends_waiting_for_locks,
    error_info,
    login,
    refresh,
    register,
    validate,
)
from tests.processes import eventually

pytestmark = pytest.mark.asyncio


async def _count(pool: Pool, table: str) -> int:
    # Table names come from this module's own constants, never from input.
    count: int = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return count


class CountingHasher(Argon2Hasher):
    """The real argon2 hasher, counting the hashes it computes."""

    __slots__ = ("hashes",)

    def __init__(self, config: Config) -> None:
        super().__init__(
            time_cost=config.argon2_time_cost,
            memory_cost_kib=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            sign_in_workers=1,
            sign_up_workers=1,
            queue_limit=0,
        )
        self.hashes = 0

    @asynccontextmanager
    async def reserve(self, lane: Lane, *, client: str) -> AsyncIterator[HashSlot]:
        async with super().reserve(lane, client=client) as slot:
            yield _CountingSlot(self, slot)


class _CountingSlot:
    def __init__(self, hasher: CountingHasher, slot: HashSlot) -> None:
        self._hasher = hasher
        self._slot = slot

    async def hash(self, password: str) -> str:
        self._hasher.hashes += 1
        return await self._slot.hash(password)


async def _rejection(stub: Stub, **fields: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(pb.RegisterRequest(**fields))
    return error_info(caught.value)


async def test_register_creates_the_account_login_signs_into(stub: Stub, pool: Pool) -> None:
    await stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))

    signed_in = await login(stub)

    stored = await pool.fetchval("SELECT id FROM users WHERE email = 'alice@example.com'")
    assert uuid.UUID(signed_in.user_id) == stored


async def _answer(stub: Stub, email: str, password: str) -> tuple[object, ...]:
    """Everything a caller sees of one Register call but its request id."""
    call = stub.Register(pb.RegisterRequest(email=email, password=password))
    body: object
    try:
        body = (await call).SerializeToString()
    except grpc.aio.AioRpcError as error:
        body = error_info(error)
    trailing = [(k, v) for k, v in await call.trailing_metadata() if k != "x-request-id"]
    initial = [(k, v) for k, v in await call.initial_metadata() if k != "x-request-id"]
    return await call.code(), body, initial, trailing


async def test_register_answers_a_taken_email_exactly_as_a_free_one(stub: Stub) -> None:
    free = await _answer(stub, "alice@example.com", PASSWORD)

    taken = await _answer(stub, "ALICE@example.com", "another password 42")

    assert taken == free
    assert free[:2] == (grpc.StatusCode.OK, b"")


async def test_register_with_a_taken_email_changes_nothing_and_audits_it(
    stub: Stub, pool: Pool
) -> None:
    await stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))
    owner = await pool.fetchval("SELECT id FROM users")

    await stub.Register(
        pb.RegisterRequest(email="alice@example.com", password="another password 42")
    )

    assert await login(stub)  # the owner's password still signs in
    assert await _count(pool, "users") == 1
    assert await _count(pool, "sessions") == 1
    events = await pool.fetch("SELECT event, user_id FROM audit_events WHERE event LIKE '%regist%'")
    assert sorted((row["event"], row["user_id"]) for row in events) == [
        ("register_email_taken", owner),
        ("user_registered", owner),
    ]


async def _register_all_at_once(stub: Stub, pool: Pool, passwords: list[str]) -> list[object]:
    """Register alice@example.com once per password, every call in flight at once: each
    queues on the email's claim behind one this holds uncommitted, and all go on together
    when it rolls back. What each call returned or raised."""
    async with pool.acquire() as conn:
        held = conn.transaction()
        await held.start()
        await conn.execute(
            "INSERT INTO user_emails (email, user_id) VALUES ('alice@example.com', $1)",
            uuid.uuid4(),
        )

        async def register_with(password: str) -> pb.RegisterResponse:
            request = pb.RegisterRequest(email="alice@example.com", password=password)
            response: pb.RegisterResponse = await stub.Register(request)
            return response

        calls = [asyncio.create_task(register_with(password)) for password in passwords]

        async def all_waiting() -> bool:
            return await backends_waiting_for_locks(pool) == len(passwords)

        try:
            await eventually(all_waiting)
        finally:
            await held.rollback()
    return await asyncio.gather(*calls, return_exceptions=True)


async def _login_answer(stub: Stub, password: str) -> pb.LoginResponse | str:
    """Login's session, or the reason it was refused."""
    try:
        return await login(stub, password=password)
    except grpc.aio.AioRpcError as error:
        return error_info(error)[1]


async def test_concurrent_registers_of_one_email_make_one_account(stub: Stub, pool: Pool) -> None:
    passwords = [f"concurrent passphrase {n}" for n in range(3)]

    answers = await _register_all_at_once(stub, pool, passwords)

    assert [type(answer) for answer in answers] == [pb.RegisterResponse] * len(passwords)
    logins = [await _login_answer(stub, password) for password in passwords]
    signed_in = [answer for answer in logins if isinstance(answer, pb.LoginResponse)]
    refused = [answer for answer in logins if isinstance(answer, str)]
    assert len(signed_in) == 1
    assert refused == ["INVALID_CREDENTIALS"] * (len(passwords) - 1)
    owner = uuid.UUID(signed_in[0].user_id)
    assert await _count(pool, "users") == 1
    events = await pool.fetch("SELECT event, user_id FROM audit_events WHERE event LIKE '%regist%'")
    assert sorted((row["event"], row["user_id"]) for row in events) == [
        ("register_email_taken", owner),
        ("register_email_taken", owner),
        ("user_registered", owner),
    ]


async def test_concurrent_registers_revealing_accounts_sign_one_in_and_refuse_the_rest(
    launch: Launch, pool: Pool
) -> None:
    stub = (await launch(registration_reveals_accounts="true")).stub
    passwords = [f"concurrent passphrase {n}" for n in range(3)]

    answers = await _register_all_at_once(stub, pool, passwords)

    created = [a for a in answers if isinstance(a, pb.RegisterResponse)]
    refused = [error_info(a)[:2] for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert refused == [(grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")] * (len(passwords) - 1)
    assert await _count(pool, "users") == 1
    assert (await validate(stub, created[0].access_token)).active


async def test_register_hashes_the_password_once_for_a_free_and_for_a_taken_email(
    config: Config, pool: Pool, clock: FrozenClock
) -> None:
    hasher = CountingHasher(config)
    refusals = build_refusal_log(pool)
    service = build_session_service(
        config,
        pool,
        clock,
        build_key_ring(config, pool, clock),
        hasher,
        refusals,
        throttle=build_login_throttle(config, pool, clock, refusals),
    )
    counts = []
    try:
        for password in (PASSWORD, "another password 42"):
            before = hasher.hashes
            await service.register(
                email="alice@example.com",
                password=password,
                display_name="",
                remember_me=False,
                device=DeviceInfo(
                    user_agent="",
                    ip_address="127.0.0.1",
                    device_type=DeviceType.UNKNOWN,
                    browser="",
                    os="",
                    device_name="",
                ),
            )
            counts.append(hasher.hashes - before)
    finally:
        hasher.close()

    assert counts == [1, 1]


async def test_register_revealing_accounts_signs_the_new_account_in(launch: Launch) -> None:
    stub = (await launch(registration_reveals_accounts="true")).stub

    registered = await stub.Register(
        pb.RegisterRequest(email="alice@example.com", password=PASSWORD)
    )

    validated = await validate(stub, registered.access_token)
    assert validated.active
    assert (validated.user_id, validated.session_id) == (
        registered.user_id,
        registered.session_id,
    )
    assert (await refresh(stub, registered.refresh_token)).session_id == registered.session_id


@pytest.mark.parametrize(
    "second_email",
    ["alice@example.com", "ALICE@Example.COM"],
    ids=["same-case", "different-case"],
)
async def test_register_revealing_accounts_with_a_taken_email_is_email_taken(
    launch: Launch, pool: Pool, second_email: str
) -> None:
    stub = (await launch(registration_reveals_accounts="true")).stub
    await stub.Register(pb.RegisterRequest(email="alice@example.com", password=PASSWORD))

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
