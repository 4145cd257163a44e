"""Lockouts that stop guessers without locking out owners: per account and address first,
per account only for addresses it never signed in from (escalating to a day), per
address only for accounts not known there, with higher limits for shared addresses.

Client addresses come from x-forwarded-for through a trusted proxy (the test's own
loopback address), as behind a load balancer.
"""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.domain.throttle import ESCALATED_WINDOW, ESCALATION_FACTOR
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch, Launched
from tests.helpers import PASSWORD, Stub, error_info, register
from tests.integration.test_login_throttle import retry_delay

pytestmark = pytest.mark.asyncio

WRONG = "not the password"
OWNER = "owner@example.com"
ATTACKER = "203.0.113.66"
OFFICE = "198.51.100.10"
HOME = "192.0.2.7"
# Only the test's loopback client is a proxy whose x-forwarded-for is believed.
PROXY = "127.0.0.1/32"


async def login_from(stub: Stub, address: str, email: str = OWNER, password: str = PASSWORD) -> str:
    """ "OK", or the reason the Login from `address` was refused."""
    try:
        await stub.Login(
            pb.LoginRequest(email=email, password=password),
            metadata=(("x-forwarded-for", address),),
        )
    except grpc.aio.AioRpcError as error:
        return error_info(error)[1]
    return "OK"


async def guess_from(stub: Stub, address: str, times: int, email: str = OWNER) -> list[str]:
    return [await login_from(stub, address, email, WRONG) for _ in range(times)]


async def with_owner(launched: Launched) -> Launched:
    await register(launched.stub, email=OWNER)
    return launched


async def test_an_attack_from_one_address_locks_that_address_only(launch: Launch) -> None:
    launched = await with_owner(await launch(trusted_proxies=PROXY))

    answers = await guess_from(launched.stub, ATTACKER, 8)

    assert answers == ["INVALID_CREDENTIALS"] * 5 + ["RATE_LIMITED"] * 3
    assert await login_from(launched.stub, ATTACKER) == "RATE_LIMITED"
    # The owner, from an address the account never signed in from before.
    assert await login_from(launched.stub, HOME) == "OK"


async def test_an_attack_from_many_addresses_spares_the_owner_on_a_known_address(
    launch: Launch,
) -> None:
    launched = await with_owner(await launch(trusted_proxies=PROXY, login_failures_per_account="6"))
    assert await login_from(launched.stub, HOME) == "OK"
    # Three addresses, two guesses each: six failures for the account, none locked alone.
    for octet in (1, 2, 3):
        await guess_from(launched.stub, f"203.0.113.{octet}", 2)

    assert await login_from(launched.stub, "203.0.113.4", password=PASSWORD) == "RATE_LIMITED"
    assert await login_from(launched.stub, HOME) == "OK"


async def test_a_long_attack_locks_the_account_for_the_day_not_the_window(
    launch: Launch, clock: FrozenClock
) -> None:
    per_account = 2
    launched = await with_owner(
        await launch(trusted_proxies=PROXY, login_failures_per_account=str(per_account))
    )
    # Each window, new addresses guess until the account's limit refuses them.
    for window in range(ESCALATION_FACTOR):
        await guess_from(launched.stub, f"203.0.113.{window}", per_account)
        clock.advance(timedelta(minutes=15))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await launched.stub.Login(
            pb.LoginRequest(email=OWNER, password=PASSWORD),
            metadata=(("x-forwarded-for", "203.0.113.200"),),
        )

    assert error_info(caught.value)[1] == "RATE_LIMITED"
    # Locked until a day after the first failure, not for one more window.
    assert retry_delay(caught.value) == ESCALATED_WINDOW - ESCALATION_FACTOR * timedelta(minutes=15)


async def test_a_colleague_known_behind_a_locked_office_address_still_signs_in(
    launch: Launch,
) -> None:
    launched = await with_owner(await launch(trusted_proxies=PROXY, login_failures_per_ip="3"))
    assert await login_from(launched.stub, OFFICE) == "OK"
    for number in range(3):
        await guess_from(launched.stub, OFFICE, 1, email=f"victim{number}@example.com")
    await register(launched.stub, email="newcomer@example.com")

    assert await login_from(launched.stub, OFFICE, email="newcomer@example.com") == "RATE_LIMITED"
    assert await login_from(launched.stub, OFFICE) == "OK"


async def test_a_shared_address_has_higher_limits(launch: Launch) -> None:
    launched = await with_owner(
        await launch(
            trusted_proxies=PROXY,
            login_failures_per_ip="3",
            shared_addresses=f"{OFFICE}/32",
            shared_address_factor="2",
        )
    )
    for number in range(5):
        await guess_from(launched.stub, OFFICE, 1, email=f"victim{number}@example.com")

    assert await login_from(launched.stub, OFFICE) == "OK"
    await guess_from(launched.stub, OFFICE, 1, email="victim6@example.com")
    assert await login_from(launched.stub, OFFICE, email="victim7@example.com") == "RATE_LIMITED"
