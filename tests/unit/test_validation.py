"""Input rules for user-typed fields: pure functions, no I/O."""

from __future__ import annotations

import pytest

from authsvc.api.errors import reason_of
from authsvc.core.errors import InvalidArgument, WeakPassword
from authsvc.domain.validation import (
    MAX_LABEL_LENGTH,
    check_new_password,
    clean_label,
    normalize_email,
)

EMAIL = "alice@example.com"

# --- normalize_email -------------------------------------------------------------


def test_normalize_email_trims_and_lower_cases() -> None:
    assert normalize_email("  Alice@Example.COM\t") == EMAIL


def test_normalize_email_accepts_254_characters() -> None:
    email = "a" * 242 + "@example.com"

    assert normalize_email(email) == email


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "a" * 243 + "@example.com",
        "alice",
        "alice@",
        "@example.com",
        "alice@example",
        "al ice@example.com",
        "alice@exa@mple.com",
        "ali\x00ce@example.com",
        "ali\u200bce@example.com",
    ],
    ids=[
        "empty",
        "blank",
        "255-chars",
        "no-at",
        "no-domain",
        "no-local-part",
        "no-dot-in-domain",
        "inner-space",
        "two-ats",
        "nul",
        "zero-width-space",
    ],
)
def test_normalize_email_rejects_invalid_addresses_naming_the_email_field(email: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_email(email)

    assert (reason_of(caught.value), caught.value.metadata) == ("INVALID_FIELD", {"field": "email"})


# --- check_new_password ----------------------------------------------------------


def test_check_new_password_accepts_a_password_of_min_length() -> None:
    check_new_password("abcdefgh", min_length=8, email=EMAIL)


def test_check_new_password_accepts_256_characters() -> None:
    check_new_password("xy" * 128, min_length=8, email=EMAIL)


def test_check_new_password_rejects_a_password_shorter_than_min_length_as_weak() -> None:
    with pytest.raises(WeakPassword) as caught:
        check_new_password("x" * 11, min_length=12, email=EMAIL)

    assert (reason_of(caught.value), caught.value.metadata) == (
        "WEAK_PASSWORD",
        {"field": "password"},
    )


@pytest.mark.parametrize("password", [EMAIL, "ALICE@example.com", f"  {EMAIL} "])
def test_check_new_password_rejects_the_email_address_as_weak(password: str) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_new_password(password, min_length=8, email=EMAIL)

    assert caught.value.metadata == {"field": "password"}


@pytest.mark.parametrize(
    "password", [" " * 12, " \t " * 4, "a" * 12], ids=["spaces", "whitespace", "repeated"]
)
def test_check_new_password_rejects_blank_or_one_repeated_character_as_weak(
    password: str,
) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_new_password(password, min_length=8, email=EMAIL)

    assert caught.value.metadata == {"field": "password"}


def test_check_new_password_accepts_a_passphrase_with_spaces() -> None:
    check_new_password("correct horse battery", min_length=8, email=EMAIL)


@pytest.mark.parametrize("password", ["", "x" * 257], ids=["empty", "257-chars"])
def test_check_new_password_rejects_missing_or_oversized_as_invalid_field(password: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_new_password(password, min_length=8, email=EMAIL)

    assert (reason_of(caught.value), caught.value.metadata) == (
        "INVALID_FIELD",
        {"field": "password"},
    )


# --- clean_label -----------------------------------------------------------------


def test_clean_label_trims_surrounding_whitespace() -> None:
    assert clean_label("device_name", "  Work laptop \n", max_length=100) == "Work laptop"


def test_clean_label_accepts_empty() -> None:
    assert clean_label("display_name", "", max_length=100) == ""


def test_clean_label_keeps_non_ascii_letters() -> None:
    assert clean_label("display_name", "Zoë Ångström 李", max_length=100) == "Zoë Ångström 李"


def test_clean_label_accepts_max_length_measured_after_trimming() -> None:
    value = "x" * MAX_LABEL_LENGTH

    assert clean_label("display_name", f"  {value}  ", max_length=MAX_LABEL_LENGTH) == value


def test_clean_label_rejects_over_max_length_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        clean_label("display_name", "x" * (MAX_LABEL_LENGTH + 1), max_length=MAX_LABEL_LENGTH)

    assert (reason_of(caught.value), caught.value.metadata) == (
        "INVALID_FIELD",
        {"field": "display_name"},
    )


@pytest.mark.parametrize(
    "value",
    ["Ali\x00ce", "Ali\nce", "Ali\tce", "Ali\x7fce", "Ali\u200bce", "Ali\u202ece"],
    ids=["nul", "newline", "tab", "del", "zero-width-space", "rtl-override"],
)
def test_clean_label_rejects_control_characters_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        clean_label("device_name", value, max_length=100)

    assert (reason_of(caught.value), caught.value.metadata) == (
        "INVALID_FIELD",
        {"field": "device_name"},
    )
