"""Recovery codes (domain/recovery_codes.py): ten distinct 80-bit codes, typed back in
any case and with or without dashes and spaces, stored only as SHA-256."""

from __future__ import annotations

import base64
import hashlib
import re

from authsvc.domain import recovery_codes

SHOWN = re.compile(r"[a-z2-7]{4}(?:-[a-z2-7]{4}){3}")


def test_a_set_is_ten_distinct_codes_of_80_bits_in_groups_of_four() -> None:
    codes = recovery_codes.new_codes()

    assert len(set(codes)) == len(codes) == 10
    assert all(SHOWN.fullmatch(code) for code in codes)
    assert all(len(base64.b32decode(code.replace("-", "").upper())) * 8 == 80 for code in codes)
    assert set(codes).isdisjoint(recovery_codes.new_codes())


def test_case_dashes_and_spaces_do_not_matter() -> None:
    code = recovery_codes.new_codes()[0]
    plain = code.replace("-", "")

    typed = [code.upper(), plain, f" {code[:9]} {code[9:]} ", plain.upper()]

    assert {recovery_codes.normalise(text) for text in typed} == {plain}


def test_text_that_cannot_be_a_code_normalises_to_nothing() -> None:
    code = recovery_codes.new_codes()[0]

    assert [
        recovery_codes.normalise(text)
        for text in ("", code[:-1], code + "a", code.replace(code[0], "1"), code[:-1] + "!")
    ] == [None] * 5


def test_the_stored_form_is_the_sha256_of_the_normalised_code() -> None:
    code = recovery_codes.new_codes()[0]
    plain = code.replace("-", "")

    assert recovery_codes.code_hash(plain) == hashlib.sha256(plain.encode()).digest()
