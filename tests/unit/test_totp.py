"""TOTP codes (domain/totp.py): the step a code matches within the skew window, nothing
outside it, and URIs an authenticator app reads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp

from authsvc.domain import totp

# The start of a time step, so one step either side is exactly 30 s away.
AT = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=totp.STEP_SECONDS)
FIXED_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def code_at(secret: str, instant: datetime) -> str:
    """What an authenticator app shows at `instant` (pyotp, as the apps compute it)."""
    return pyotp.TOTP(secret).at(instant)


def test_a_new_secret_is_160_random_bits_in_base32() -> None:
    secret = totp.new_secret()

    assert len(base64.b32decode(secret)) * 8 == 160
    assert secret != totp.new_secret()


def test_the_current_code_matches_the_current_step() -> None:
    secret = totp.new_secret()

    assert totp.matching_step(secret, code_at(secret, AT), at=AT) == pyotp.TOTP(secret).timecode(AT)


def test_codes_one_step_behind_or_ahead_match_their_own_step() -> None:
    secret = totp.new_secret()
    now_step = pyotp.TOTP(secret).timecode(AT)

    behind = totp.matching_step(secret, code_at(secret, AT - STEP), at=AT)
    ahead = totp.matching_step(secret, code_at(secret, AT + STEP), at=AT)

    assert (behind, ahead) == (now_step - 1, now_step + 1)


def test_codes_two_steps_away_do_not_match() -> None:
    # A fixed secret and instant: the five codes around AT are known to differ.
    secret = FIXED_SECRET
    codes = [code_at(secret, AT + k * STEP) for k in (-2, -1, 0, 1, 2)]
    assert len(set(codes)) == 5

    assert [totp.matching_step(secret, codes[k], at=AT) for k in (0, 4)] == [None, None]


def test_a_wrong_or_malformed_code_matches_nothing() -> None:
    secret = totp.new_secret()
    right = code_at(secret, AT)
    wrong = f"{(int(right) + 1) % 10**6:06d}"

    assert [
        totp.matching_step(secret, code, at=AT)
        for code in (wrong, "", "12345", "1234567", "abcdef")
    ] == [None] * 5


def test_only_six_ascii_digits_are_code_shaped() -> None:
    assert totp.is_code_shaped("012345")
    assert not any(
        totp.is_code_shaped(code) for code in ("12345", "1234567", "12 345", "١٢٣٤٥٦", "12345\n")
    )


def test_the_provisioning_uri_names_issuer_account_and_parameters() -> None:
    secret = totp.new_secret()

    uri = totp.provisioning_uri(secret, account="alice@example.com", issuer="Example")

    parts = urlsplit(uri)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.netloc, parts.path) == (
        "otpauth",
        "totp",
        "/Example:alice%40example.com",
    )
    assert query == {
        "secret": secret,
        "issuer": "Example",
        "algorithm": "SHA1",
        "digits": "6",
        "period": "30",
    }
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    assert parsed.at(AT) == code_at(secret, AT)
