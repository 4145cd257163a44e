"""`authsvc admin ...` against a real server: the operator key from the environment or a
file, JSON out, the ErrorInfo reason and a non-zero exit on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import AdminLaunched
from tests.helpers import PASSWORD, login, register
from tests.processes import CommandRun, authsvc_env, run_authsvc

pytestmark = pytest.mark.asyncio


def _key(metadata: tuple[tuple[str, str]]) -> str:
    return metadata[0][1].removeprefix("Bearer ")


async def _admin(
    admin: AdminLaunched, *args: str, key: str | None = None, **env: str
) -> CommandRun:
    """`authsvc admin ARGS` at the server, as the operator unless `key` or `env` say else."""
    settings = {"AUTHSVC_OPERATOR_KEY": _key(admin.as_operator) if key is None else key, **env}
    return await run_authsvc(
        "admin",
        *args,
        "--address",
        f"127.0.0.1:{admin.server.port}",
        env=authsvc_env(None, **settings),
    )


async def test_admin_get_user_prints_the_account_as_json(admin_server: AdminLaunched) -> None:
    registered = await register(admin_server.stub, display_name="Alice")

    run = await _admin(admin_server, "get-user", "--email", "ALICE@example.com")

    assert run.code == 0, run.stderr
    user = json.loads(run.stdout)["user"]
    assert (user["user_id"], user["display_name"], user["live_session_count"]) == (
        registered.user_id,
        "Alice",
        1,
    )


async def test_admin_reads_the_operator_key_from_a_file(
    admin_server: AdminLaunched, tmp_path: Path
) -> None:
    registered = await register(admin_server.stub)
    await login(admin_server.stub)
    key_file = tmp_path / "operator.key"
    key_file.write_text(_key(admin_server.as_operator) + "\n")

    run = await _admin(
        admin_server,
        "revoke-user-sessions",
        "--user-id",
        registered.user_id,
        "--reason",
        "support call",
        key="",
        AUTHSVC_OPERATOR_KEY_FILE=str(key_file),
    )

    assert (run.code, json.loads(run.stdout)) == (0, {"revoked_session_count": 2}), run.stderr


async def test_admin_lists_audit_events_by_type(admin_server: AdminLaunched) -> None:
    registered = await register(admin_server.stub)

    run = await _admin(
        admin_server,
        "list-audit-events",
        "--user-id",
        registered.user_id,
        "--event-type",
        "user_registered",
        "--after",
        "2000-01-01T00:00:00Z",
    )

    assert run.code == 0, run.stderr
    answer = json.loads(run.stdout)
    assert [event["event_type"] for event in answer["events"]] == ["user_registered"]
    assert answer["next_page_token"] == ""


async def test_admin_failure_exits_1_with_the_reason(admin_server: AdminLaunched) -> None:
    run = await _admin(
        admin_server, "get-user", "--user-id", "00000000-0000-4000-8000-000000000000"
    )

    assert (run.code, run.stdout) == (1, "")
    assert run.stderr.startswith("authsvc admin: USER_NOT_FOUND")


async def test_admin_with_a_plain_service_key_exits_1_operator_not_allowed(
    admin_server: AdminLaunched,
) -> None:
    run = await _admin(admin_server, "list-audit-events", key=_key(admin_server.as_service))

    assert run.code == 1
    assert run.stderr.startswith("authsvc admin: OPERATOR_NOT_ALLOWED")


async def test_admin_without_a_key_exits_2_before_calling(admin_server: AdminLaunched) -> None:
    run = await _admin(admin_server, "list-audit-events", key="")

    assert run.code == 2
    assert "AUTHSVC_OPERATOR_KEY" in run.stderr


async def test_admin_takes_no_key_on_its_command_line(admin_server: AdminLaunched) -> None:
    run = await _admin(
        admin_server, "list-audit-events", "--operator-key", _key(admin_server.as_operator)
    )

    assert run.code == 2
    assert "unrecognized arguments" in run.stderr


async def test_admin_clear_login_throttle_prints_an_empty_answer(
    admin_server: AdminLaunched,
) -> None:
    await admin_server.stub.Register(pb.RegisterRequest(email="dan@example.com", password=PASSWORD))

    run = await _admin(admin_server, "clear-login-throttle", "--email", "dan@example.com")

    assert (run.code, json.loads(run.stdout)) == (0, {}), run.stderr


async def test_admin_get_session_prints_why_and_by_whom_a_session_ended(
    admin_server: AdminLaunched,
) -> None:
    registered = await register(admin_server.stub)
    await admin_server.stub.Logout(
        pb.LogoutRequest(), metadata=(("authorization", f"Bearer {registered.access_token}"),)
    )

    run = await _admin(admin_server, "get-session", registered.session_id)

    assert run.code == 0, run.stderr
    session = json.loads(run.stdout)["session"]
    assert (session["session_id"], session["end_reason"], session["ended_by"]) == (
        registered.session_id,
        "SESSION_END_REASON_USER_LOGOUT",
        {
            "kind": "SESSION_ENDER_KIND_USER",
            "session_id": registered.session_id,
            "operator": "",
        },
    )


async def test_admin_retrying_an_unknown_webhook_delivery_exits_1_with_the_reason(
    admin_server: AdminLaunched,
) -> None:
    run = await _admin(
        admin_server,
        "retry-webhook-delivery",
        "--delivery-id",
        "00000000-0000-4000-8000-000000000000",
    )

    assert run.code == 1
    assert run.stderr.startswith("authsvc admin: WEBHOOK_DELIVERY_NOT_FOUND")
