"""Property-based fuzzing of every RPC over a real socket against a real PostgreSQL.

One server serves the whole module, with login limits too high to throttle the
fuzzer. Whatever hypothesis sends, each answer is OK or a documented rejection
(a status code and an ErrorInfo reason, paired as ErrorReason's proto comments pair them),
never INTERNAL or UNKNOWN; and a rejected call leaves every row of users, sessions,
refresh_tokens and signing_keys as it was (and the audit trail and throttle counters too,
unless it was a failed login).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import jwt
import pytest
import pytest_asyncio
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authsvc.app import AuthServer
from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import READY_TIMEOUT, make_config
from tests.helpers import (
    ERROR_REASON_PROTO,
    PASSWORD,
    Registered,
    Stub,
    bearer,
    documented_reasons,
    error_info,
    login,
    register,
)

pytestmark = pytest.mark.asyncio

MAX_REQUEST_BYTES = 64 * 1024  # the default max_message_bytes
LONG_TEXT_BYTES = 60 * 1024
METADATA_BYTES = 6 * 1024
SERVICE = "/authsvc.v1.AuthService"

# The codes a caller's bad input may earn; everything else would be the service's fault.
REJECTION_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def fuzz_settings(max_examples: int) -> settings:
    # database=None: no .hypothesis/ directory in the repository.
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@functools.cache
def documented_answers() -> frozenset[tuple[str, str]]:
    """(code name, reason) pairs, as ErrorReason's value comments in the proto give them."""
    pairs = frozenset((code, reason) for reason, code in documented_reasons().items())
    assert len(pairs) >= 15, f"the reasons in {ERROR_REASON_PROTO} did not parse: {pairs}"
    return pairs


# --- the server and what the fuzzer aims at ----------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_server(pool: Pool, pg_dsn: str) -> AsyncIterator[AuthServer]:
    config = make_config(
        pg_dsn,
        login_failures_per_account="1000000",
        login_failures_per_ip="1000000",
        # So x-forwarded-for from the test client is parsed, not ignored.
        trusted_proxies="127.0.0.0/8",
    )
    assert config.max_message_bytes == MAX_REQUEST_BYTES
    server = AuthServer(config, pool=pool, clock=FrozenClock())
    await server.start()
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await server.wait_ready()
        yield server
    finally:
        await server.stop(None)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fuzz_channel(fuzz_server: AuthServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fuzz_server.port}") as channel:
        yield channel


@dataclass(frozen=True, slots=True, repr=False)
class Target:
    stub: Stub
    channel: grpc.aio.Channel
    pool: Pool
    alice_email: str
    alice: Registered
    alice_page_token: str
    bob: Registered
    kid: str

    def __repr__(self) -> str:
        return f"Target(alice={self.alice.user_id}, bob={self.bob.user_id})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints a failing example with this, not with the dataclass fields.
        printer.text(repr(self))


@pytest_asyncio.fixture
async def target(
    clean_db: None, fuzz_server: AuthServer, fuzz_channel: grpc.aio.Channel, pool: Pool
) -> Target:
    """Alice (two sessions) and Bob on the module's server, after this test's TRUNCATE."""
    # clean_db emptied signing_keys under the running server: give it a key again.
    await fuzz_server.keys.ensure_active_key()
    stub: Stub = auth_service_pb2_grpc.AuthServiceStub(fuzz_channel)
    alice = await register(stub, email="alice@example.com")
    await login(stub, email="alice@example.com")
    bob = await register(stub, email="bob@example.com")
    page: pb.ListSessionsResponse = await stub.ListSessions(
        pb.ListSessionsRequest(page_size=1), metadata=bearer(alice.access_token)
    )
    assert page.next_page_token
    kid = jwt.get_unverified_header(alice.access_token)["kid"]
    return Target(
        stub, fuzz_channel, pool, "alice@example.com", alice, page.next_page_token, bob, kid
    )


# --- invariants ------------------------------------------------------------------

_STATE = """
SELECT
    (SELECT count(*) FROM users) AS users,
    (SELECT count(*) FROM sessions) AS sessions,
    (SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL) AS revoked_sessions,
    (SELECT max(last_active_at) FROM sessions) AS last_active_at,
    (SELECT count(*) FROM refresh_tokens) AS refresh_tokens,
    (SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL) AS rotated_tokens,
    -- Every column of every row, so an edited value (a password hash, a revoke note, a
    -- deadline) shows, not only added or removed rows.
    (SELECT md5(coalesce(string_agg(u::text, ',' ORDER BY u.id), '')) FROM users u)
        AS users_rows,
    (SELECT md5(coalesce(string_agg(s::text, ',' ORDER BY s.id), '')) FROM sessions s)
        AS sessions_rows,
    (SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) FROM refresh_tokens t)
        AS refresh_tokens_rows,
    (SELECT md5(coalesce(string_agg(k::text, ',' ORDER BY k.kid), '')) FROM signing_keys k)
        AS signing_keys_rows
"""
# What only a failed login, a detected theft or a sign-up attempt (an email taken or
# not, it counts against the sign-up limits) may add to: the audit trail and the
# throttle's counters. Any other rejection leaves them alone too.
# Refusal tallies are written by the server's RefusalLog once a minute of wall time, so under
# load one can land during any call: it is an earlier refusal's record, not this call's.
_RECORDS = """
SELECT
    (SELECT count(*) FROM audit_events
      WHERE detail->>'reason' IS DISTINCT FROM 'rate_limited') AS audit_events,
    (SELECT md5(coalesce(string_agg(f::text, ',' ORDER BY f.bucket), '')) FROM login_failures f)
        AS login_failures
"""
_RECORDED_REJECTIONS = frozenset(
    {"INVALID_CREDENTIALS", "RATE_LIMITED", "REFRESH_TOKEN_REUSED", "EMAIL_TAKEN"}
)


async def state(pool: Pool) -> dict[str, Any]:
    row = await pool.fetchrow(_STATE)
    assert row is not None
    return dict(row)


def assert_documented_rejection(error: grpc.aio.AioRpcError, request: Message | None) -> None:
    code = error.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        f"{code.name}: {error.details()}"
    )
    assert code in REJECTION_CODES, f"{code.name}: {error.details()}"
    code, reason, metadata = error_info(error)  # asserts one ErrorInfo, domain authsvc
    assert (code.name, reason) in documented_answers()
    if code is grpc.StatusCode.INVALID_ARGUMENT and request is not None:
        assert metadata.get("field") in request.DESCRIPTOR.fields_by_name, metadata


@dataclass(frozen=True, slots=True)
class Answer:
    """A call's response (None if rejected) and the state before and after it."""

    response: Any
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def rejected(self) -> bool:
        return self.response is None


async def answer(pool: Pool, request: Message | None, call: Callable[[], Awaitable[Any]]) -> Answer:
    """Make the call (the thunk starts it after the first snapshot) and check the invariants.

    A request over the size limit must be RESOURCE_EXHAUSTED: gRPC refuses it before
    the service runs, so that rejection has no ErrorInfo.
    """
    before = await state(pool)
    records_before = await pool.fetchrow(_RECORDS)
    try:
        response: Any = await call()
    except grpc.aio.AioRpcError as exc:
        error = exc
    else:
        return Answer(response, before, await state(pool))
    reason = ""
    if request is not None and request.ByteSize() > MAX_REQUEST_BYTES:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    else:
        assert_documented_rejection(error, request)
        reason = error_info(error)[1]
    after = await state(pool)
    assert after == before, "a rejected call changed state"
    if reason not in _RECORDED_REJECTIONS:
        assert await pool.fetchrow(_RECORDS) == records_before, f"{reason} left a record"
    return Answer(None, before, after)


async def answer_with_drawn_metadata(
    target: Target,
    data: st.DataObject,
    rpc: Callable[..., Awaitable[Any]],
    request: Message,
    *,
    valid_bearer: bool = True,
) -> Answer:
    """`answer` for `rpc(request)`, called with metadata drawn from `data`."""
    md = data.draw(metadata(target, valid_bearer=valid_bearer), label="metadata")
    return await answer(target.pool, request, lambda: rpc(request, metadata=md))


# --- strategies ----------------------------------------------------------------

# Every code point but surrogates (protobuf strings are UTF-8), plus the usual suspects.
_CHARS = st.characters(codec="utf-8")
_SPECIALS = (
    "",
    " ",
    "\x00",
    "\t",
    "\r\n",
    "\x7f",
    "\u0085",
    "\u00a0",
    "\u200b",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\ufffd",
    "e\u0301",
    "\u0130",
    "\u00df",
    "\ufb01",
    "\U0001d51e",
    "\U0001f469\u200d\U0001f4bb",
    "\uff20",
    "@",
    ".",
    "%00",
    "' OR '1'='1",
    "\\",
    '"',
    "{}",
    "null",
    "Bearer",
)
SHORT_TEXT = st.lists(
    st.one_of(st.text(_CHARS, max_size=24), st.sampled_from(_SPECIALS)), max_size=4
).map("".join)
# Around the limits: labels 100, revoke note 200, email 254, password 256, tokens 1024/4096.
_LENGTHS = st.one_of(
    st.integers(1, LONG_TEXT_BYTES),
    st.sampled_from([99, 100, 101, 199, 200, 201, 254, 255, 256, 257, 1024, 1025, 4096, 4097]),
)
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_URLSAFE = string.ascii_letters + string.digits + "-_"


def _repeat_to(piece: str, size: int) -> str:
    """`piece` repeated to at most `size` UTF-8 bytes, cut on a code point."""
    times = size // len(piece.encode()) + 1
    return (piece * times).encode()[:size].decode("utf-8", "ignore")


_PIECE = st.one_of(
    st.text(_CHARS, min_size=1, max_size=24), st.sampled_from([s for s in _SPECIALS if s])
)
LONG_TEXT = st.builds(_repeat_to, st.lists(_PIECE, min_size=1, max_size=4).map("".join), _LENGTHS)
# Text a well-behaved client sends, so that the fuzz also gets past validation.
PLAIN_TEXT = st.text(st.characters(categories=["L", "N", "Zs", "P", "S"]), max_size=30)


def texts(*, long: bool) -> st.SearchStrategy[str]:
    """Empty, plain or nasty text; nasty text up to ~60 KiB when `long`."""
    return st.one_of(st.just(""), PLAIN_TEXT, SHORT_TEXT, *([LONG_TEXT] if long else []))


def ascii_texts(max_size: int) -> st.SearchStrategy[str]:
    """Printable ASCII: the only thing gRPC metadata values may hold."""
    piece = st.text(_PRINTABLE, min_size=1, max_size=40)
    return st.one_of(
        st.text(_PRINTABLE, max_size=40), st.builds(_repeat_to, piece, st.integers(1, max_size))
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_json(value: object) -> str:
    return _b64url(json.dumps(value).encode())


def _decode_b64url_json(value: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | SHORT_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SHORT_TEXT, inner, max_size=3),
    max_leaves=6,
)


def jwt_shaped(kid: str, claims: dict[str, Any]) -> st.SearchStrategy[str]:
    """Three base64url JSON segments: forged headers, claims and signatures."""
    header = st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(["EdDSA", "ES256", "HS256", "RS256", "none", ""]) | JSON_VALUES,
            "typ": st.sampled_from(["at+jwt", "JWT"]) | JSON_VALUES,
            "kid": st.just(kid) | JSON_VALUES,
            "crit": JSON_VALUES,
            "b64": st.booleans(),
        },
    )
    payload = st.one_of(
        JSON_VALUES,
        st.builds(
            lambda changes: {**claims, **changes},
            st.dictionaries(st.sampled_from(sorted(claims)) | SHORT_TEXT, JSON_VALUES, max_size=3),
        ),
    )
    signature = st.one_of(st.binary(max_size=96).map(_b64url), st.text(_PRINTABLE, max_size=20))
    return st.builds(
        lambda h, p, s: f"{_b64url_json(h)}.{_b64url_json(p)}.{s}",
        header | JSON_VALUES,
        payload,
        signature,
    )


def access_tokens(t: Target, *, valid: bool) -> st.SearchStrategy[str]:
    """ASCII strings for an access token; Alice's real one too when `valid`."""
    claims: dict[str, Any] = jwt.decode(t.alice.access_token, options={"verify_signature": False})
    forged = st.one_of(
        ascii_texts(5000),
        jwt_shaped(t.kid, claims),
        st.lists(st.text(_PRINTABLE, max_size=30), min_size=1, max_size=5).map(".".join),
    )
    return st.one_of(st.just(t.alice.access_token), forged) if valid else forged


def metadata(t: Target, *, valid_bearer: bool) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Arbitrary authorization, x-forwarded-for and x-request-id entries, repeats included."""
    schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "", "Bearer:"])
    authorization = st.one_of(
        ascii_texts(5000),
        st.builds(
            lambda scheme, gap, token, tail: f"{scheme}{gap}{token}{tail}",
            schemes,
            st.sampled_from(["", " ", "  "]),
            access_tokens(t, valid=valid_bearer),
            st.sampled_from(["", " ", " x", ","]),
        ),
    )
    forwarded = st.lists(
        st.one_of(st.ip_addresses().map(str), st.text(_PRINTABLE, max_size=45)), max_size=4
    ).map(", ".join)
    entry = st.one_of(
        st.tuples(st.just("authorization"), authorization),
        st.tuples(st.just("x-forwarded-for"), forwarded),
        st.tuples(st.just("x-request-id"), ascii_texts(200)),
    )
    # Under gRPC's 8 KiB metadata limit (with its own headers), which the service never sees.
    fuzzed = (
        st.lists(entry, max_size=3)
        .filter(lambda entries: sum(len(k) + len(v) for k, v in entries) <= METADATA_BYTES)
        .map(tuple)
    )
    # Half the time exactly Alice's credentials, so the fuzz reaches past authentication.
    return st.one_of(st.just(bearer(t.alice.access_token)), fuzzed) if valid_bearer else fuzzed


def emails(t: Target) -> st.SearchStrategy[str]:
    real = t.alice_email
    variants = st.builds(
        lambda before, mangle, after: f"{before}{mangle(real)}{after}",
        st.sampled_from(["", " ", "\t", "\x00", "\u200f", "\ufeff", "\u00a0"]),
        st.sampled_from([str, str.upper, str.title, lambda e: e.replace("@", "\uff20")]),
        st.sampled_from(["", " ", "\n", "\x00", "\u202e", "."]),
    )
    shaped = st.builds(lambda a, b, c: f"{a}@{b}.{c}", SHORT_TEXT, SHORT_TEXT, SHORT_TEXT)
    return st.one_of(st.just(real), st.emails(), variants, shaped, SHORT_TEXT)


def refresh_tokens(real: str) -> st.SearchStrategy[str]:
    """Everything but `real` itself: garbage, the right shape, and near misses of `real`."""
    flipped = st.builds(
        lambda i, c: real[:i] + c + real[i + 1 :],
        st.integers(0, len(real) - 1),
        st.sampled_from(_URLSAFE),
    )
    near = st.one_of(
        flipped,
        st.sampled_from(
            [real.swapcase(), real[:-1], real + "A", real + "=", f" {real}", f"{real}\n", real * 2]
        ),
    )
    return st.one_of(
        SHORT_TEXT,
        LONG_TEXT,
        st.text(st.sampled_from(_URLSAFE), min_size=42, max_size=44),
        near,
    ).filter(lambda token: token != real)


def _iso(value: datetime) -> str:
    return value.isoformat()


_OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
_INSTANTS = st.one_of(
    st.datetimes(timezones=st.none() | _OFFSETS).map(_iso),
    # The ends of datetime's range, where a UTC offset leaves it.
    st.sampled_from(
        [
            "0001-01-01T00:00:00+00:01",
            "0001-01-01T00:00:00-00:01",
            "9999-12-31T23:59:59.999999+00:01",
            "9999-12-31T23:59:59.999999-00:01",
        ]
    ),
)


def edited_page_tokens(t: Target) -> st.SearchStrategy[str]:
    """Alice's own page token with its instant, session id or version changed."""
    body = _decode_b64url_json(t.alice_page_token)
    edits = st.fixed_dictionaries(
        {"t": _INSTANTS | JSON_VALUES},
        optional={"i": st.uuids().map(str) | JSON_VALUES, "v": st.just(2) | JSON_VALUES},
    )
    return st.builds(lambda e: _b64url_json({**body, **e}), edits)


def page_tokens(t: Target) -> st.SearchStrategy[str]:
    """Garbage, other JSON, and Alice's own token decoded, edited and re-encoded."""
    body = _decode_b64url_json(t.alice_page_token)
    edits = st.fixed_dictionaries(
        {},
        optional={
            "v": st.just(1) | JSON_VALUES,
            "t": _INSTANTS | JSON_VALUES,
            "i": st.uuids().map(str) | JSON_VALUES,
            "u": st.just(body["u"]) | JSON_VALUES,
        },
    )
    tampered = st.one_of(
        st.builds(lambda e: {**body, **e}, edits),
        # Only the instant: what a caller who decoded their own token would try first.
        st.builds(lambda instant: {**body, "t": instant}, _INSTANTS),
    ).map(_b64url_json)
    return st.one_of(
        tampered,
        SHORT_TEXT,
        LONG_TEXT,
        JSON_VALUES.map(_b64url_json),
        st.just(t.alice_page_token),
    )


def _fullwidth(text: str) -> str:
    return text.translate({ord(d): 0xFF10 + int(d) for d in string.digits})


def session_ids(t: Target) -> st.SearchStrategy[str]:
    """Never one of Alice's: garbage, random UUIDs, and Bob's session in many spellings."""
    bob = uuid.UUID(t.bob.session_id)
    spellings = [
        str(bob),
        str(bob).upper(),
        "{" + str(bob) + "}",
        f"urn:uuid:{bob}",
        bob.hex,
        _fullwidth(str(bob)),
        f" {bob}",
        f"{bob}\x00",
        str(bob)[:-1],
        f"{bob}0",
    ]
    return st.one_of(
        st.just(str(bob)), st.uuids().map(str), st.sampled_from(spellings), SHORT_TEXT, LONG_TEXT
    )


# --- properties ----------------------------------------------------------------


@given(data=st.data())
@fuzz_settings(200)
async def test_register_with_any_input_is_accepted_or_refused_by_contract(
    target: Target, data: st.DataObject
) -> None:
    long = data.draw(st.sampled_from(["email", "password", "display_name", "device_name", ""]))
    request = pb.RegisterRequest(
        email=data.draw(emails(target) if long != "email" else LONG_TEXT, label="email"),
        password=data.draw(st.just(PASSWORD) | texts(long=long == "password"), label="password"),
        display_name=data.draw(texts(long=long == "display_name"), label="display_name"),
        device_name=data.draw(texts(long=long == "device_name"), label="device_name"),
        remember_me=data.draw(st.booleans(), label="remember_me"),
    )

    outcome = await answer_with_drawn_metadata(target, data, target.stub.Register, request)

    if not outcome.rejected:
        added = {k: outcome.after[k] - outcome.before[k] for k in ("users", "sessions")}
        # OK for a free and a taken email alike (docs/accounts.md): an account for a free
        # one, nothing for a taken one, and no session either way.
        assert added in ({"users": 1, "sessions": 0}, {"users": 0, "sessions": 0})


@given(data=st.data())
@fuzz_settings(200)
async def test_login_with_any_input_is_accepted_or_refused_by_contract(
    target: Target, data: st.DataObject
) -> None:
    long = data.draw(st.sampled_from(["email", "password", "device_name", ""]))
    request = pb.LoginRequest(
        email=data.draw(emails(target) if long != "email" else LONG_TEXT, label="email"),
        password=data.draw(st.just(PASSWORD) | texts(long=long == "password"), label="password"),
        device_name=data.draw(texts(long=long == "device_name"), label="device_name"),
        remember_me=data.draw(st.booleans(), label="remember_me"),
    )

    outcome = await answer_with_drawn_metadata(target, data, target.stub.Login, request)

    if not outcome.rejected:
        assert outcome.after["users"] == outcome.before["users"]
        assert outcome.after["sessions"] == outcome.before["sessions"] + 1


@given(data=st.data())
@fuzz_settings(200)
async def test_refresh_with_any_token_but_a_live_one_is_refused_and_changes_nothing(
    target: Target, data: st.DataObject
) -> None:
    request = pb.RefreshRequest(
        refresh_token=data.draw(refresh_tokens(target.alice.refresh_token), label="token")
    )

    outcome = await answer_with_drawn_metadata(target, data, target.stub.Refresh, request)

    assert outcome.rejected


@given(data=st.data())
@fuzz_settings(200)
async def test_logout_with_any_input_that_is_not_a_valid_request_is_refused(
    target: Target, data: st.DataObject
) -> None:
    # Live credentials appear only with a scope outside the enum, so nothing here may succeed.
    scope = data.draw(
        st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1), st.sampled_from([4, -1])),
        label="scope",
    )
    live_credentials = scope not in range(4)
    token = data.draw(
        refresh_tokens(target.alice.refresh_token)
        | (st.just(target.alice.refresh_token) if live_credentials else st.nothing()),
        label="refresh_token",
    )
    request = pb.LogoutRequest(scope=pb.LogoutScope.ValueType(scope), refresh_token=token)

    outcome = await answer_with_drawn_metadata(
        target, data, target.stub.Logout, request, valid_bearer=live_credentials
    )

    assert outcome.rejected


@given(data=st.data())
@fuzz_settings(200)
async def test_list_sessions_with_any_input_never_changes_state(
    target: Target, data: st.DataObject
) -> None:
    request = pb.ListSessionsRequest(
        page_size=data.draw(
            st.integers(0, 1001) | st.integers(-(2**31), 2**31 - 1), label="page_size"
        ),
        page_token=data.draw(page_tokens(target), label="page_token"),
    )

    outcome = await answer_with_drawn_metadata(target, data, target.stub.ListSessions, request)

    assert outcome.after == outcome.before


@given(data=st.data())
@fuzz_settings(60)
async def test_list_sessions_with_an_edited_page_token_lists_or_is_invalid_page_token(
    target: Target, data: st.DataObject
) -> None:
    # The owner tag stays Alice's: she decoded her own token and edited what it says.
    request = pb.ListSessionsRequest(
        page_size=data.draw(st.integers(0, 1001), label="page_size"),
        page_token=data.draw(edited_page_tokens(target), label="page_token"),
    )

    outcome = await answer(
        target.pool,
        request,
        lambda: target.stub.ListSessions(request, metadata=bearer(target.alice.access_token)),
    )

    assert outcome.after == outcome.before


@given(data=st.data())
@fuzz_settings(200)
async def test_revoke_session_with_any_input_revokes_nothing_that_is_not_the_callers(
    target: Target, data: st.DataObject
) -> None:
    long = data.draw(st.sampled_from(["session_id", "reason", ""]))
    request = pb.RevokeSessionRequest(
        session_id=data.draw(
            session_ids(target) if long != "session_id" else LONG_TEXT, label="session_id"
        ),
        reason=data.draw(texts(long=long == "reason"), label="reason"),
    )

    outcome = await answer_with_drawn_metadata(target, data, target.stub.RevokeSession, request)

    assert outcome.rejected


@given(data=st.data())
@fuzz_settings(200)
async def test_validate_token_with_any_forged_token_is_inactive(
    target: Target, data: st.DataObject
) -> None:
    token = data.draw(
        st.one_of(SHORT_TEXT, LONG_TEXT, access_tokens(target, valid=False)), label="token"
    )
    request = pb.ValidateTokenRequest(access_token=token)

    outcome = await answer_with_drawn_metadata(target, data, target.stub.ValidateToken, request)

    assert outcome.after == outcome.before
    if not outcome.rejected:
        response: pb.ValidateTokenResponse = outcome.response
        assert (response.active, response.inactive_reason) == (False, "TOKEN_INVALID")
        assert (response.user_id, response.session_id) == ("", "")


@given(data=st.data())
@fuzz_settings(30)
async def test_get_jwks_with_any_metadata_answers_the_key_set(
    target: Target, data: st.DataObject
) -> None:
    request = pb.GetJwksRequest()

    outcome = await answer_with_drawn_metadata(target, data, target.stub.GetJwks, request)

    assert not outcome.rejected
    assert target.kid in {key["kid"] for key in json.loads(outcome.response.jwks_json)["keys"]}


REQUEST_TYPES: dict[str, type[Message]] = {
    "Register": pb.RegisterRequest,
    "Login": pb.LoginRequest,
    "Refresh": pb.RefreshRequest,
    "Logout": pb.LogoutRequest,
    "ListSessions": pb.ListSessionsRequest,
    "RevokeSession": pb.RevokeSessionRequest,
    "ValidateToken": pb.ValidateTokenRequest,
    "GetJwks": pb.GetJwksRequest,
}

# One length-delimited field (tag < 16, payload < 128 bytes): invalid UTF-8 in a string.
_ONE_RAW_FIELD = st.builds(
    lambda number, payload: bytes([number << 3 | 2, len(payload)]) + payload,
    st.integers(1, 15),
    st.binary(max_size=127),
)


@given(
    method=st.sampled_from(sorted(REQUEST_TYPES)),
    raw=st.one_of(st.binary(max_size=256), _ONE_RAW_FIELD),
)
@fuzz_settings(100)
async def test_any_request_bytes_get_a_documented_answer(
    target: Target, method: str, raw: bytes
) -> None:
    # What a client in any language may put on the wire, decodable or not.
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = target.channel.unary_unary(
        f"{SERVICE}/{method}"
    )
    try:
        request: Message | None = REQUEST_TYPES[method].FromString(raw)
    except DecodeError:
        request = None

    await answer(target.pool, request, lambda: call(raw))


# --- the size limit ----------------------------------------------------------------

_OVERSIZE = "x" * (MAX_REQUEST_BYTES + 1)

OVERSIZED_CALLS: dict[str, Callable[[Stub], Awaitable[Any]]] = {
    "Register": lambda s: s.Register(
        pb.RegisterRequest(email="big@example.com", password=PASSWORD, display_name=_OVERSIZE)
    ),
    "Login": lambda s: s.Login(pb.LoginRequest(email="alice@example.com", password=_OVERSIZE)),
    "Refresh": lambda s: s.Refresh(pb.RefreshRequest(refresh_token=_OVERSIZE)),
    "Logout": lambda s: s.Logout(pb.LogoutRequest(refresh_token=_OVERSIZE)),
    "ListSessions": lambda s: s.ListSessions(pb.ListSessionsRequest(page_token=_OVERSIZE)),
    "RevokeSession": lambda s: s.RevokeSession(pb.RevokeSessionRequest(reason=_OVERSIZE)),
    "ValidateToken": lambda s: s.ValidateToken(pb.ValidateTokenRequest(access_token=_OVERSIZE)),
}


@pytest.mark.parametrize("method", sorted(OVERSIZED_CALLS))
async def test_request_over_the_size_limit_is_resource_exhausted_and_changes_nothing(
    target: Target, method: str
) -> None:
    before = await state(target.pool)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await OVERSIZED_CALLS[method](target.stub)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await state(target.pool) == before


async def test_request_of_exactly_the_size_limit_reaches_the_service(target: Target) -> None:
    request = pb.RegisterRequest(email="big@example.com", password=PASSWORD)
    request.display_name = "x" * (MAX_REQUEST_BYTES - request.ByteSize() - 4)
    assert request.ByteSize() == MAX_REQUEST_BYTES

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await target.stub.Register(request)

    assert error_info(caught.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        {"field": "display_name"},
    )
