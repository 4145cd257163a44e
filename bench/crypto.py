"""The crypto bound: JWT signs and verifies per second with EdDSA (the service's
default algorithm, through PyJWT as the service does) and argon2id hashes per
second at argon2-cffi's defaults (the service's default parameters)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import argon2
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["CryptoRates", "measure"]

CryptoRates = dict[str, float]


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": "authsvc",
        "aud": "authsvc",
        "sub": str(uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }


def _rate(seconds: float, work: Callable[[], object]) -> float:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        work()
        count += 1
    return count / elapsed


def one_core(seconds: float) -> CryptoRates:
    """Rates on one core (this process)."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key()
    claims = _claims()
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"})

    def sign() -> None:
        jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "bench"})

    def verify() -> None:
        jwt.decode(token, public, algorithms=["EdDSA"], audience="authsvc", issuer="authsvc")

    hasher = argon2.PasswordHasher()  # time_cost=3, memory_cost=65536 KiB, parallelism=4
    return {
        "jwt_sign_per_s": _rate(seconds, sign),
        "jwt_verify_per_s": _rate(seconds, verify),
        "argon2_hash_per_s": _rate(2 * seconds, lambda: hasher.hash("bench password 1")),
    }


def measure(seconds: float, cores: int) -> dict[str, CryptoRates]:
    """One core, then `cores` processes at once (rates summed)."""
    single = one_core(seconds)
    with ProcessPoolExecutor(cores, mp_context=get_context("spawn")) as pool:
        parts = list(pool.map(one_core, [seconds] * cores))
    total = {name: sum(part[name] for part in parts) for name in single}
    return {"one_core": single, "all_cores": total}
