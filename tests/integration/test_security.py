"""Security properties over a real socket: no secrets in logs, no forged access
token gets in, and a flood of made-up refresh tokens changes nothing, locks nothing
and does not stand in the way of a real refresh."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from authsvc.core.clock import FrozenClock
from authsvc.log_format import JsonFormatter
from authsvc.store.pool import Pool
from authsvc.store.sessions import _LOCK_SESSION_BY_TOKEN, _ROTATE_IF_CURRENT, _TOKEN_OWNER
from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import (
    ACCESS_TOKEN_TTL,
    CLOCK_SKEW,
    Registered,
    Stub,
    bearer,
    error_info,
    login,
    refresh,
    refresh_failure,
    register,
    validate,
)
from tests.integration.test_validate_token import (
    _b64url,
    _b64url_json,
    _claims,
    _header,
    _sign_with_stored_key,
)

pytestmark = pytest.mark.asyncio

BURST = 300
# Upper bound on a call that would wait on a row lock; only such a wait reaches it.
LOCK_WAIT_BOUND = 10.0


async def live_state(pool: Pool) -> dict[str, Any]:
    """What a refresh or a revocation would change."""
    row = await pool.fetchrow(
        """
        SELECT
            (SELECT count(*) FROM users) AS users,
            (SELECT count(*) FROM sessions) AS sessions,
            (SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL) AS revoked_sessions,
            (SELECT max(last_active_at) FROM sessions) AS last_active_at,
            (SELECT count(*) FROM refresh_tokens) AS refresh_tokens,
            (SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL) AS rotated_tokens
        """
    )
    assert row is not None
    return dict(row)


async def revoked_sessions(pool: Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL")
    return count


# --- secrets never reach the logs ----------------------------------------------


async def test_logs_never_contain_secrets_through_a_full_session_cycle(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = "Alice.Secret@Example.COM"
    password = "correct horse battery staple"
    wrong_password = "incorrect horse battery staple"

    registered = await register(stub, email=email, password=password)
    logged_in = await login(stub, email=email, password=password)
    refreshed = await refresh(stub, logged_in.refresh_token)
    await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(refreshed.access_token))
    await validate(stub, registered.access_token)
    await stub.Logout(pb.LogoutRequest(), metadata=bearer(registered.access_token))
    await stub.Logout(pb.LogoutRequest(refresh_token=refreshed.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError):
        await login(stub, email=email, password=wrong_password)

    forbidden = {
        "password": password,
        "wrong password": wrong_password,
        "email": email,
        "normalised email": email.lower(),
        "registered access token": registered.access_token,
        "registered refresh token": registered.refresh_token,
        "login access token": logged_in.access_token,
        "login refresh token": logged_in.refresh_token,
        "refreshed access token": refreshed.access_token,
        "refreshed refresh token": refreshed.refresh_token,
    }
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records] + [r.getMessage() for r in caplog.records]
    # The capture saw the server: one access-log line per call above.
    assert sum(getattr(r, "event", None) == "rpc" for r in caplog.records) >= 8
    leaks = [(name, line) for line in lines for name, secret in forbidden.items() if secret in line]
    assert leaks == []


# --- forged access tokens against every authenticated RPC -----------------------


@dataclass(frozen=True, slots=True)
class Scene:
    """Alice (two sessions) is the victim; Mallory has an account of her own."""

    stub: Stub
    pool: Pool
    clock: FrozenClock
    alice: Registered
    alice_phone: pb.LoginResponse
    mallory: Registered


@pytest_asyncio.fixture
async def scene(stub: Stub, pool: Pool, clock: FrozenClock) -> Scene:
    alice = await register(stub, email="alice@example.com")
    alice_phone = await login(stub, email="alice@example.com")
    mallory = await register(stub, email="mallory@example.com")
    return Scene(stub, pool, clock, alice, alice_phone, mallory)


async def _alg_none(scene: Scene) -> str:
    token = scene.alice.access_token
    return f"{_b64url_json({**_header(token), 'alg': 'none'})}.{_b64url_json(_claims(token))}."


async def _hs256_keyed_with_public_key(scene: Scene, *, pem: bool) -> str:
    jwks: pb.GetJwksResponse = await scene.stub.GetJwks(pb.GetJwksRequest())
    public_key = jwt.PyJWK(json.loads(jwks.jwks_json)["keys"][0]).key
    assert isinstance(public_key, ed25519.Ed25519PublicKey)
    secret = (
        public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        if pem
        else public_key.public_bytes_raw()
    )
    token = scene.alice.access_token
    header = {**_header(token), "alg": "HS256"}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(_claims(token))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


async def _hs256_raw(scene: Scene) -> str:
    return await _hs256_keyed_with_public_key(scene, pem=False)


async def _hs256_pem(scene: Scene) -> str:
    return await _hs256_keyed_with_public_key(scene, pem=True)


async def _wrong_iss(scene: Scene) -> str:
    claims = {**_claims(scene.alice.access_token), "iss": "https://evil.example"}
    return await _sign_with_stored_key(scene.pool, claims)


async def _wrong_aud(scene: Scene) -> str:
    claims = {**_claims(scene.alice.access_token), "aud": "another-service"}
    return await _sign_with_stored_key(scene.pool, claims)


async def _unknown_kid(scene: Scene) -> str:
    claims = _claims(scene.alice.access_token)
    return await _sign_with_stored_key(scene.pool, claims, kid="unknown-kid")


async def _tampered_payload(scene: Scene) -> str:
    # Mallory's own signed token, with Alice's user and session written into it.
    header, _, signature = scene.mallory.access_token.split(".")
    claims = {
        **_claims(scene.mallory.access_token),
        "sub": scene.alice.user_id,
        "sid": scene.alice.session_id,
    }
    return f"{header}.{_b64url_json(claims)}.{signature}"


async def _expired(scene: Scene) -> str:
    scene.clock.advance(ACCESS_TOKEN_TTL + CLOCK_SKEW)
    return scene.alice.access_token


async def _typ_jwt(scene: Scene) -> str:
    return await _sign_with_stored_key(scene.pool, _claims(scene.alice.access_token), typ="JWT")


async def _re_signed(scene: Scene) -> str:
    """Not a forgery: Alice's own claims signed with the stored key, as the server would."""
    return await _sign_with_stored_key(scene.pool, _claims(scene.alice.access_token))


FORGERIES: dict[str, tuple[Callable[[Scene], Awaitable[str]], str]] = {
    "alg-none": (_alg_none, "TOKEN_INVALID"),
    "hs256-keyed-with-raw-public-key": (_hs256_raw, "TOKEN_INVALID"),
    "hs256-keyed-with-pem-public-key": (_hs256_pem, "TOKEN_INVALID"),
    "wrong-iss": (_wrong_iss, "TOKEN_INVALID"),
    "wrong-aud": (_wrong_aud, "TOKEN_INVALID"),
    "unknown-kid": (_unknown_kid, "TOKEN_INVALID"),
    "tampered-payload": (_tampered_payload, "TOKEN_INVALID"),
    "expired": (_expired, "TOKEN_EXPIRED"),
    "typ-jwt": (_typ_jwt, "TOKEN_INVALID"),
}

# Each call aims at Alice: a forged token that got in would show her data or revoke her sessions.
AUTHENTICATED_CALLS: dict[str, Callable[[Scene, str], Awaitable[Any]]] = {
    "ListSessions": lambda scene, token: scene.stub.ListSessions(
        pb.ListSessionsRequest(), metadata=bearer(token)
    ),
    "RevokeSession": lambda scene, token: scene.stub.RevokeSession(
        pb.RevokeSessionRequest(session_id=scene.alice_phone.session_id), metadata=bearer(token)
    ),
    "Logout": lambda scene, token: scene.stub.Logout(
        pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_ALL_SESSIONS), metadata=bearer(token)
    ),
}


@pytest.mark.parametrize("rpc", sorted(AUTHENTICATED_CALLS))
async def test_token_re_signed_with_the_stored_key_is_accepted_by_every_authenticated_rpc(
    scene: Scene, rpc: str
) -> None:
    # Control for the forgeries below: the harness's signing produces tokens the server takes.
    token = await _re_signed(scene)

    await AUTHENTICATED_CALLS[rpc](scene, token)


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
@pytest.mark.parametrize("rpc", sorted(AUTHENTICATED_CALLS))
async def test_forged_access_token_is_refused_by_every_authenticated_rpc_and_revokes_nothing(
    scene: Scene, rpc: str, forgery: str
) -> None:
    forge, reason = FORGERIES[forgery]
    token = await forge(scene)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await AUTHENTICATED_CALLS[rpc](scene, token)

    code, actual_reason, _ = error_info(caught.value)
    assert (code, actual_reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert await revoked_sessions(scene.pool) == 0


# --- refresh-token abuse -----------------------------------------------------------


def random_refresh_tokens(count: int) -> Iterator[str]:
    """Well-formed (the shape ours have) but issued by no one."""
    return (secrets.token_urlsafe(32) for _ in range(count))


async def refresh_burst(stub: Stub, count: int) -> list[tuple[grpc.StatusCode, str]]:
    return list(
        await asyncio.gather(*(refresh_failure(stub, t) for t in random_refresh_tokens(count)))
    )


async def test_burst_of_random_refresh_tokens_is_refresh_token_invalid_and_changes_nothing(
    stub: Stub, pool: Pool
) -> None:
    await register(stub)
    await login(stub)
    before = await live_state(pool)

    answers = await refresh_burst(stub, BURST)

    assert set(answers) == {(grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")}
    assert await live_state(pool) == before


async def test_burst_of_random_refresh_tokens_leaves_no_row_locked(stub: Stub, pool: Pool) -> None:
    await register(stub)
    await login(stub)

    await refresh_burst(stub, BURST)

    idle_in_transaction = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    assert idle_in_transaction == 0
    async with pool.acquire() as conn, conn.transaction():
        try:
            await conn.fetch("SELECT id FROM sessions FOR UPDATE NOWAIT")
            await conn.fetch("SELECT id FROM refresh_tokens FOR UPDATE NOWAIT")
        except asyncpg.LockNotAvailableError:
            pytest.fail("a session or refresh-token row is still locked after the burst")


async def test_burst_of_random_refresh_tokens_takes_no_row_lock(stub: Stub, pool: Pool) -> None:
    # Every session and token row is locked by another transaction for the whole burst: a
    # lookup that tried to lock a row would wait behind it until its deadline.
    await register(stub)
    await login(stub)
    async with pool.acquire() as holder, holder.transaction():
        await holder.fetch("SELECT id FROM sessions FOR UPDATE")
        await holder.fetch("SELECT id FROM refresh_tokens FOR UPDATE")

        answers = await asyncio.gather(
            *(
                stub.Refresh(pb.RefreshRequest(refresh_token=token), timeout=LOCK_WAIT_BOUND)
                for token in random_refresh_tokens(BURST)
            ),
            return_exceptions=True,
        )

    assert {error_info(a)[:2] if isinstance(a, grpc.aio.AioRpcError) else a for a in answers} == {
        (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
    }


async def test_legitimate_refresh_succeeds_while_a_burst_of_random_tokens_runs(
    stub: Stub,
) -> None:
    alice = await register(stub)
    # Tasks start in creation order: the real refresh goes out in the middle of the burst.
    half = BURST // 2
    before = [asyncio.ensure_future(refresh_failure(stub, t)) for t in random_refresh_tokens(half)]
    legitimate = asyncio.ensure_future(refresh(stub, alice.refresh_token))
    after = [asyncio.ensure_future(refresh_failure(stub, t)) for t in random_refresh_tokens(half)]

    refreshed = await legitimate

    answers = await asyncio.gather(*before, *after)
    assert refreshed.session_id == alice.session_id
    assert (await validate(stub, refreshed.access_token)).active
    assert set(answers) == {(grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")}


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


async def populate_at_scale(stub: Stub, pool: Pool, sessions: int) -> None:
    """Many sessions with a few refresh tokens each, analysed: plans as in production."""
    await register(stub)
    async with pool.acquire() as conn, conn.transaction():
        # Copies of the real session row, so every column (and any added later) is valid.
        await conn.execute(
            "CREATE TEMP TABLE copies ON COMMIT DROP AS"
            " SELECT s.* FROM sessions s CROSS JOIN generate_series(1, $1)",
            sessions,
        )
        await conn.execute("UPDATE copies SET id = gen_random_uuid()")
        await conn.execute("INSERT INTO sessions SELECT * FROM copies")
        await conn.execute(
            """
            INSERT INTO refresh_tokens
                (id, session_id, token_hash, created_at, expires_at, user_id)
            SELECT gen_random_uuid(), c.id, sha256(convert_to(c.id::text || g::text, 'UTF8')),
                   c.created_at, c.idle_expires_at, c.user_id
            FROM copies c CROSS JOIN generate_series(1, 3) g
            """
        )
    await pool.execute("ANALYZE users, sessions, refresh_tokens")


# Refresh looks a token up first in its one-statement rotation (all a random
# token ever reaches), then, for a spent or expired one, under the session lock; both
# under the user its prefix names (here the one user, whose rows are all there are). A
# legacy token (no prefix) is looked up by its hash alone, through the same index.
@pytest.mark.parametrize(
    ("statement", "rest", "routed"),
    [
        pytest.param(
            _ROTATE_IF_CURRENT,
            (
                datetime.now(UTC),
                timedelta(days=7),
                b"box",
                uuid.uuid4(),
                b"\0" * 32,
                "kid",
                "",
                "",
                False,
                None,
            ),
            True,
            id="rotation",
        ),
        pytest.param(_LOCK_SESSION_BY_TOKEN, (), True, id="session lock"),
        pytest.param(_TOKEN_OWNER, (), False, id="legacy token's user"),
    ],
)
async def test_refresh_token_lookup_uses_the_token_hash_index(
    stub: Stub, pool: Pool, statement: str, rest: tuple[object, ...], routed: bool
) -> None:
    await populate_at_scale(stub, pool, sessions=2000)
    unknown_hash = hashlib.sha256(uuid.uuid4().bytes).digest()
    user = (await pool.fetchval("SELECT id FROM users"),) if routed else ()

    explained = await pool.fetchval(
        f"EXPLAIN (FORMAT JSON) {statement}", unknown_hash, *rest, *user
    )

    nodes = list(_plan_nodes(json.loads(explained)[0]["Plan"]))
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    assert any(
        n["Node Type"] in ("Index Scan", "Index Only Scan")
        and n.get("Index Name") == "refresh_tokens_token_hash_user_id_key"
        for n in nodes
    ), nodes
