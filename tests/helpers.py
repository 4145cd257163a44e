"""Small helpers the tests share: error decoding and common calls."""

from __future__ import annotations

import re
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc import config as config_module
from authsvc.api.errors import answer_for, deadline_exceeded_status, internal_status
from authsvc.core.errors import AuthError
from authsvc.core.models import Revocation, SessionEndReason, SessionId, UserId
from authsvc.v1 import admin_service_pb2_grpc, auth_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1.error_reason_pb2 import ErrorReason

if TYPE_CHECKING:
    from authsvc.store.pool import Pool

    # The async stub type exists only in the generated .pyi (mypy-protobuf).
    Stub: TypeAlias = auth_service_pb2_grpc.AuthServiceAsyncStub
    AdminStub: TypeAlias = admin_service_pb2_grpc.AdminServiceAsyncStub
else:
    Stub = auth_service_pb2_grpc.AuthServiceStub
    AdminStub = admin_service_pb2_grpc.AdminServiceStub

# Any answer that carries a session's token pair.
Tokens: TypeAlias = pb.RegisterResponse | pb.LoginResponse | pb.RefreshResponse

PASSWORD = "correct horse battery"


def _default(name: str) -> Any:
    setting = next(setting for setting in config_module.SETTINGS if setting.name == name)
    assert setting.default is not None
    return setting.parse(setting.default)


# The server's default leeway on access-token times: a token is expired at exp + CLOCK_SKEW.
CLOCK_SKEW: timedelta = _default("clock_skew")
# The server's default access-token lifetime.
ACCESS_TOKEN_TTL: timedelta = _default("access_token_ttl")


def error_info(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """(code, ErrorInfo.reason, ErrorInfo.metadata) decoded from the trailers."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "authsvc"
            return error.code(), info.reason, dict(info.metadata)
    raise AssertionError(f"no ErrorInfo in status {status}")


def bearer(access_token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {access_token}"),)


# What `register` returns: Register's own session (a server that reveals accounts) or Login's.
Registered: TypeAlias = pb.RegisterResponse | pb.LoginResponse


async def register(
    stub: Stub, email: str = "alice@example.com", password: str = PASSWORD, **fields: Any
) -> Registered:
    """The new user's first session: Register's, or, when Register answers without tokens
    (the default: the same answer for a new and a taken email), a Login's after it.
    `remember_me` and `device_name` go to both calls, `display_name` to Register."""
    registered: pb.RegisterResponse = await stub.Register(
        pb.RegisterRequest(email=email, password=password, **fields)
    )
    if registered.access_token:
        return registered
    fields.pop("display_name", None)
    return await login(stub, email=email, password=password, **fields)


async def login(
    stub: Stub, email: str = "alice@example.com", password: str = PASSWORD, **fields: Any
) -> pb.LoginResponse:
    response: pb.LoginResponse = await stub.Login(
        pb.LoginRequest(email=email, password=password, **fields)
    )
    return response


async def refresh(stub: Stub, refresh_token: str) -> pb.RefreshResponse:
    response: pb.RefreshResponse = await stub.Refresh(
        pb.RefreshRequest(refresh_token=refresh_token)
    )
    return response


async def refresh_failure(stub: Stub, refresh_token: str) -> tuple[grpc.StatusCode, str]:
    """(code, reason) of a Refresh that must fail; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await refresh(stub, refresh_token)
    code, reason, _ = error_info(caught.value)
    return code, reason


async def validate(stub: Stub, access_token: str) -> pb.ValidateTokenResponse:
    response: pb.ValidateTokenResponse = await stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=access_token)
    )
    return response


async def sign_in(stub: Stub, count: int, *, email: str = "alice@example.com") -> list[Tokens]:
    """Register, then log in until the user has `count` sessions."""
    sessions: list[Tokens] = [await register(stub, email=email)]
    for _ in range(count - 1):
        sessions.append(await login(stub, email=email))
    return sessions


async def listed_ids(stub: Stub, access_token: str) -> set[str]:
    """The session ids ListSessions shows the caller."""
    response = await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(access_token))
    return {s.session_id for s in response.sessions}


@dataclass(frozen=True, slots=True)
class Pair:
    """A session's token pair, as the tests keep them."""

    session_id: str
    access_token: str
    refresh_token: str


def pair_of(response: Tokens) -> Pair:
    return Pair(response.session_id, response.access_token, response.refresh_token)


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def error_classes(base: type[AuthError] = AuthError) -> list[type[AuthError]]:
    """Every subclass of `base`, at any depth."""
    found = []
    for cls in base.__subclasses__():
        found += [cls, *error_classes(cls)]
    return found


def _plain_answer(status: grpc.Status) -> tuple[str, grpc.StatusCode]:
    [(_, value)] = status.trailing_metadata
    [packed] = status_pb2.Status.FromString(value).details
    info = error_details_pb2.ErrorInfo()
    packed.Unpack(info)
    return info.reason, status.code


def served_reasons() -> dict[str, grpc.StatusCode]:
    """reason -> status code, for every answer the server can give with an ErrorInfo."""
    served = dict([_plain_answer(deadline_exceeded_status()), _plain_answer(internal_status())])
    for cls in error_classes():
        code, reason = answer_for(cls)
        served[ErrorReason.Name(reason)] = code
    return served


ERROR_REASON_PROTO = Path(__file__).resolve().parents[1] / "protos/authsvc/v1/error_reason.proto"
# A value's comment block, whose first line starts with its status code, then the value.
_DOCUMENTED_VALUE = re.compile(r"^  // ([A-Z_]+): (?:.*\n  //.*)*.*\n  ([A-Z_]+) = \d+;$", re.M)


def documented_reasons() -> dict[str, str]:
    """reason -> status code name, as ErrorReason's value comments in the proto give them."""
    text = ERROR_REASON_PROTO.read_text()
    return {reason: code for code, reason in _DOCUMENTED_VALUE.findall(text)}


def logout_revocation(cursor: int, revoked_at: datetime) -> Revocation:
    """A revocation-feed entry at `cursor`: a logout of a session of its own."""
    return Revocation(
        cursor=cursor,
        session_id=SessionId(uuid.uuid4()),
        user_id=UserId(uuid.uuid4()),
        reason=SessionEndReason.USER_LOGOUT,
        revoked_at=revoked_at,
    )


# On Citus a statement on a distributed or reference table waits for its lock on the
# node holding the row, which the coordinator's pg_stat_activity does not show (there
# the caller waits on the worker's answer): citus_stat_activity shows every node's. A
# caller is counted once (its global pid), though it waits on several nodes at once (a
# reference table's rows are on every node).
_LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
_LOCK_WAITERS_ON_EVERY_NODE = (
    "SELECT count(DISTINCT global_pid) FROM citus_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def backends_waiting_for_locks(pool: Pool) -> int:
    """How many of the database's backends wait for a lock now, on any node of a Citus
    cluster: how a test knows a call it started has reached the lock it holds."""
    on_citus = await pool.fetchval("SELECT to_regclass('citus_stat_activity') IS NOT NULL")
    waiting: int = await pool.fetchval(_LOCK_WAITERS_ON_EVERY_NODE if on_citus else _LOCK_WAITERS)
    return waiting
