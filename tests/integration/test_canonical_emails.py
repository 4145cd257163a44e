"""Emails that look the same are one account: NFKC, case folding and IDNA, end to end."""

from __future__ import annotations

import grpc
import pytest

from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import PASSWORD, Stub, error_info, login

pytestmark = pytest.mark.asyncio

OTHER_PASSWORD = "another password 42"


async def _register(stub: Stub, email: str, password: str = PASSWORD) -> None:
    """Register and ignore the answer: these tests judge by the accounts that exist."""
    try:
        await stub.Register(pb.RegisterRequest(email=email, password=password))
    except grpc.aio.AioRpcError as error:
        # Reveal mode's answer for a taken email; any other failure is the test's.
        if error_info(error)[1] != "EMAIL_TAKEN":
            raise


async def _emails(pool: Pool) -> list[str]:
    return [row["email"] for row in await pool.fetch("SELECT email FROM users ORDER BY email")]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("jos\u00e9@example.com", "jose\u0301@example.com"),
        ("ada@example.com", "\uff41\uff44\uff41@example.com"),
        ("ada@example.com", "ADA@EXAMPLE.COM"),
        ("ada@b\u00fccher.example", "ada@xn--bcher-kva.example"),
        ("ada@example.com", "ada@example.com."),
    ],
    ids=[
        "nfc-then-nfd",
        "ascii-then-full-width",
        "lower-then-upper",
        "unicode-then-ascii-idna",
        "root-dot",
    ],
)
async def test_register_with_two_spellings_of_one_email_makes_one_account(
    stub: Stub, pool: Pool, first: str, second: str
) -> None:
    await _register(stub, first)

    await _register(stub, second, OTHER_PASSWORD)

    assert len(await _emails(pool)) == 1


@pytest.mark.parametrize(
    ("email", "stored"),
    [
        ("jose\u0301@example.com", "jos\u00e9@example.com"),
        ("\uff21\uff24\uff21@Example.COM", "ada@example.com"),
        ("Ada@B\u00dcCHER.Example", "ada@xn--bcher-kva.example"),
    ],
    ids=["nfd", "full-width-upper-case", "idna-domain"],
)
async def test_register_stores_the_canonical_email(
    stub: Stub, pool: Pool, email: str, stored: str
) -> None:
    await _register(stub, email)

    assert await _emails(pool) == [stored]


@pytest.mark.parametrize(
    "spelling",
    ["\uff21\uff24\uff21@Example.COM", "ADA@EXAMPLE.COM", "\uff41\uff44\uff41\uff20example.com"],
    ids=["full-width-upper-case", "upper-case", "full-width-at-sign"],
)
async def test_login_with_another_spelling_signs_into_the_canonical_account(
    stub: Stub, spelling: str
) -> None:
    await _register(stub, "ada@example.com")
    canonical = await login(stub, email="ada@example.com")

    response = await login(stub, email=spelling)

    assert response.user_id == canonical.user_id


async def test_login_with_a_unicode_domain_signs_into_its_idna_account(stub: Stub) -> None:
    await _register(stub, "ada@xn--bcher-kva.example")
    canonical = await login(stub, email="ada@xn--bcher-kva.example")

    response = await login(stub, email="ADA@B\u00fccher.example")

    assert response.user_id == canonical.user_id


@pytest.mark.parametrize(
    "email",
    ["\u0430da@example.com", "p\u0430yp\u0430l@example.com", "\u03b1lice@example.com"],
    ids=["cyrillic-a-in-latin", "two-cyrillic-a", "greek-alpha-in-latin"],
)
async def test_register_with_a_mixed_script_local_part_names_the_email_field(
    stub: Stub, pool: Pool, email: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(pb.RegisterRequest(email=email, password=PASSWORD))

    assert error_info(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "email"},
    )
    assert await _emails(pool) == []


@pytest.mark.parametrize(
    "email",
    ["\u043f\u0451\u0442\u0440@example.com", "\u5c71\u7530\u305f\u308d\u3046@example.jp"],
    ids=["all-cyrillic", "han-with-hiragana"],
)
async def test_register_accepts_a_local_part_in_one_script(
    stub: Stub, pool: Pool, email: str
) -> None:
    await _register(stub, email)

    assert len(await _emails(pool)) == 1
