"""Signing keys: the published JWKS, rotation, replicas, ES256 and persistence."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
import pytest_asyncio

from authsvc.app import AuthServer, build_key_ring
from authsvc.core.clock import FrozenClock
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import CLOCK_SKEW, Stub, login, register, validate

pytestmark = pytest.mark.asyncio

# The default key_reload_interval.
KEY_RELOAD_INTERVAL = timedelta(seconds=60)
# A rotated-in key signs this long after the rotation, when the key it replaces retires.
ACTIVATION_DELAY = 2 * KEY_RELOAD_INTERVAL
# Default access_token_ttl + key_reload_interval: how long a retired key stays published.
RETIRED_KEY_RETENTION = timedelta(minutes=15) + KEY_RELOAD_INTERVAL


@pytest_asyncio.fixture
async def es256_stub(launch: Launch) -> Stub:
    """A stub on a server that signs with ES256."""
    return (await launch(signing_algorithm="ES256")).stub


async def _jwks(stub: Stub) -> dict[str, Any]:
    response: pb.GetJwksResponse = await stub.GetJwks(pb.GetJwksRequest())
    jwks: dict[str, Any] = json.loads(response.jwks_json)
    return jwks


async def _published_kids(stub: Stub) -> set[str]:
    return {key["kid"] for key in (await _jwks(stub))["keys"]}


def _kid(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


# --- the published key set -------------------------------------------------------


async def test_jwks_key_verifies_an_access_token_offline(stub: Stub) -> None:
    registered = await register(stub)
    response: pb.GetJwksResponse = await stub.GetJwks(pb.GetJwksRequest())
    key_set = jwt.PyJWKSet.from_json(response.jwks_json)

    claims = jwt.decode(
        registered.access_token,
        key_set[_kid(registered.access_token)],
        algorithms=["EdDSA"],
        audience="authsvc",
        issuer="authsvc",
    )

    assert (claims["sub"], claims["sid"]) == (registered.user_id, registered.session_id)


async def test_jwks_key_matches_the_token_kid_and_algorithm(stub: Stub) -> None:
    registered = await register(stub)

    jwks = await _jwks(stub)

    header = jwt.get_unverified_header(registered.access_token)
    [key] = jwks["keys"]
    assert header["alg"] == "EdDSA"
    assert (key["kid"], key["alg"], key["kty"], key["use"]) == (
        header["kid"],
        "EdDSA",
        "OKP",
        "sig",
    )


async def test_jwks_holds_no_private_key_material(stub: Stub) -> None:
    await register(stub)

    jwks = await _jwks(stub)

    assert jwks["keys"]
    for key in jwks["keys"]:
        assert "d" not in key
        assert key.keys() <= {"kty", "crv", "x", "y", "kid", "alg", "use"}


# --- rotation --------------------------------------------------------------------


async def test_rotated_in_key_signs_two_reload_intervals_after_the_rotation(
    stub: Stub, server: AuthServer, clock: FrozenClock
) -> None:
    before = await register(stub)
    new_key = await server.keys.rotate()

    clock.advance(ACTIVATION_DELAY - timedelta(seconds=1))
    still_old = await login(stub)
    clock.advance(timedelta(seconds=1))
    new = await login(stub)

    assert _kid(still_old.access_token) == _kid(before.access_token)
    assert _kid(new.access_token) == new_key.kid
    assert new_key.kid != _kid(before.access_token)


async def test_rotated_in_key_is_published_by_every_replica_before_it_signs(
    stub: Stub, server: AuthServer, launch: Launch
) -> None:
    # A verifier that meets the new kid and refetches the JWKS from any replica finds it:
    # every replica reloads within the interval that passes before the key signs.
    replica = await launch()
    before = await register(stub)
    new_key = await server.keys.rotate()
    await replica.server.keys.reload()  # its periodic reload, within the interval

    published = [await _published_kids(s) for s in (stub, replica.stub)]
    signed_meanwhile = await login(replica.stub)

    assert published == [{_kid(before.access_token), new_key.kid}] * 2
    assert _kid(signed_meanwhile.access_token) == _kid(before.access_token)


async def test_a_key_retired_before_it_activated_never_signs_on_a_replica_that_cached_it(
    stub: Stub, server: AuthServer, clock: FrozenClock
) -> None:
    # A rotation from a host whose clock runs ahead schedules its key late; a second one
    # from a correct host retires that key before it ever activates. A replica that
    # loaded the first key before the second rotation must see its retirement.
    await register(stub)
    ahead = FrozenClock(clock.now() + timedelta(minutes=10))
    late = await build_key_ring(server.config, server.pool, ahead).rotate()
    await server.keys.reload()  # the replica caches the late key, not yet retired
    replacement = await server.keys.rotate()
    clock.advance(timedelta(minutes=10) + ACTIVATION_DELAY)  # past both activations

    signed = await login(stub)

    assert _kid(signed.access_token) == replacement.kid != late.kid


async def test_token_minted_before_rotation_still_validates(stub: Stub, server: AuthServer) -> None:
    before = await register(stub)
    await server.keys.rotate()

    response = await validate(stub, before.access_token)

    assert response.active


async def test_token_of_a_retired_key_validates_until_its_last_second_on_a_fresh_replica(
    stub: Stub, server: AuthServer, clock: FrozenClock, launch: Launch
) -> None:
    # A replica started late in the token's life has never seen it (no cache of verified
    # tokens) and loads only the keys still usable then.
    before = await register(stub)
    await server.keys.rotate()
    # The default access TTL, and the clock skew the server allows past it.
    clock.advance(timedelta(minutes=15) + CLOCK_SKEW - timedelta(seconds=1))
    late_replica = await launch()

    last_second = await validate(late_replica.stub, before.access_token)
    clock.advance(timedelta(seconds=1))
    expired = await validate(late_replica.stub, before.access_token)

    assert (last_second.active, last_second.inactive_reason) == (True, "")
    assert (expired.active, expired.inactive_reason) == (False, "TOKEN_EXPIRED")


async def test_jwks_lists_old_and_new_keys_after_rotation(stub: Stub, server: AuthServer) -> None:
    before = await register(stub)
    new_key = await server.keys.rotate()

    kids = await _published_kids(stub)

    assert kids == {_kid(before.access_token), new_key.kid}


async def test_retired_key_stays_in_jwks_until_its_tokens_may_have_expired(
    stub: Stub, server: AuthServer, clock: FrozenClock
) -> None:
    before = await register(stub)
    await server.keys.rotate()  # the old key retires when the new one activates
    clock.advance(ACTIVATION_DELAY + RETIRED_KEY_RETENTION - timedelta(seconds=1))
    await server.keys.reload()

    kids = await _published_kids(stub)

    assert _kid(before.access_token) in kids


async def test_retired_key_leaves_jwks_after_ttl_and_reload_interval(
    stub: Stub, server: AuthServer, clock: FrozenClock
) -> None:
    before = await register(stub)
    new_key = await server.keys.rotate()
    clock.advance(ACTIVATION_DELAY + RETIRED_KEY_RETENTION)
    await server.keys.reload()

    kids = await _published_kids(stub)

    assert kids == {new_key.kid}
    assert _kid(before.access_token) not in kids


# --- replicas --------------------------------------------------------------------


async def test_replica_that_has_not_reloaded_verifies_a_token_of_the_new_key(
    stub: Stub, server: AuthServer, launch: Launch, clock: FrozenClock
) -> None:
    replica = await launch()
    await register(stub)
    new_key = await server.keys.rotate()
    clock.advance(ACTIVATION_DELAY)
    token = (await login(stub)).access_token
    assert new_key.kid not in await _published_kids(replica.stub)

    response = await validate(replica.stub, token)

    assert response.active
    assert _kid(token) == new_key.kid


async def test_token_a_stale_replica_signs_with_the_retired_key_validates_after_rotation(
    stub: Stub, server: AuthServer, launch: Launch
) -> None:
    replica = await launch()
    await register(stub)
    new_key = await server.keys.rotate()
    token = (await login(replica.stub)).access_token
    assert _kid(token) != new_key.kid

    response = await validate(stub, token)

    assert response.active


# --- ES256 -----------------------------------------------------------------------


async def test_es256_tokens_carry_alg_es256_and_validate(es256_stub: Stub) -> None:
    registered = await register(es256_stub)

    response = await validate(es256_stub, registered.access_token)

    assert jwt.get_unverified_header(registered.access_token)["alg"] == "ES256"
    assert response.active


async def test_es256_jwks_key_is_an_ec_p256_key(es256_stub: Stub) -> None:
    registered = await register(es256_stub)

    jwks = await _jwks(es256_stub)

    [key] = jwks["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
    assert key["kid"] == _kid(registered.access_token)
    assert "d" not in key


async def test_es256_jwks_key_verifies_an_access_token_offline(es256_stub: Stub) -> None:
    registered = await register(es256_stub)
    response: pb.GetJwksResponse = await es256_stub.GetJwks(pb.GetJwksRequest())

    claims = jwt.decode(
        registered.access_token,
        jwt.PyJWKSet.from_json(response.jwks_json)[_kid(registered.access_token)],
        algorithms=["ES256"],
        audience="authsvc",
        issuer="authsvc",
    )

    assert claims["sub"] == registered.user_id


# --- persistence -----------------------------------------------------------------


async def test_restarted_server_serves_the_same_kid(launch: Launch) -> None:
    first = await launch()
    kids_before = await _published_kids(first.stub)
    await first.server.stop(None)

    second = await launch()
    kids_after = await _published_kids(second.stub)
    registered = await register(second.stub)

    assert kids_after == kids_before
    assert _kid(registered.access_token) in kids_before


async def test_token_minted_before_restart_validates_after_restart(launch: Launch) -> None:
    first = await launch()
    registered = await register(first.stub)
    await first.server.stop(None)

    second = await launch()

    response = await validate(second.stub, registered.access_token)

    assert response.active
