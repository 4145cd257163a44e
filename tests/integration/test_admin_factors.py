"""Operators and second factors on a real server and database: ListUserFactors,
RemoveUserFactor (a lost phone: every session of the user ends, the operator named as
their ender), SetSecondFactorRequired and what GetUser shows; each audited with the
operator; DeleteUser erases the factors and codes; none of it for anyone but operators."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest

from authsvc.core.clock import FrozenClock
from authsvc.store.pool import Pool
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import second_factors_pb2 as factors_pb
from tests.conftest import OPERATOR, AdminLaunched
from tests.factors import (
    ENDED_BY_FACTOR_CHANGE,
    FACTOR_NOT_FOUND,
    code_at,
    ended_by_factor_change,
    enrol_and_confirm,
    refusal,
    sign_in_with_totp,
)
from tests.helpers import bearer, login, register
from tests.processes import CommandRun, authsvc_env, run_authsvc

pytestmark = pytest.mark.asyncio

NOT_ALLOWED = (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_NOT_ALLOWED")
USER_NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def audited(pool: Pool, event: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT user_id, detail FROM audit_events WHERE event = $1 ORDER BY id", event
    )
    return [{"user_id": str(row["user_id"]), **row["detail"]} for row in rows]


async def list_user_factors(admin: AdminLaunched, user_id: str) -> admin_pb.ListUserFactorsResponse:
    response: admin_pb.ListUserFactorsResponse = await admin.admin.ListUserFactors(
        admin_pb.ListUserFactorsRequest(user_id=user_id), metadata=admin.as_operator
    )
    return response


async def get_user(admin: AdminLaunched, user_id: str) -> admin_pb.User:
    response = await admin.admin.GetUser(
        admin_pb.GetUserRequest(user_id=user_id), metadata=admin.as_operator
    )
    user: admin_pb.User = response.user
    return user


# --- ListUserFactors -----------------------------------------------------------


async def test_an_operator_lists_a_users_factors_and_unused_codes(
    admin_server: AdminLaunched, clock: FrozenClock, pool: Pool
) -> None:
    enrolled = await enrol_and_confirm(admin_server.stub, clock, await register(admin_server.stub))

    listed = await list_user_factors(admin_server, enrolled.user_id)

    assert [(f.factor_id, f.type, f.name) for f in listed.factors] == [
        (enrolled.factor_id, factors_pb.FACTOR_TYPE_TOTP, "Phone")
    ]
    assert (listed.recovery_codes_remaining, listed.second_factor_required) == (10, False)
    assert await audited(pool, "admin_user_factors_listed") == [
        {"user_id": enrolled.user_id, "operator": OPERATOR, "via": "service_key"}
    ]


async def test_listing_an_unknown_users_factors_is_user_not_found(
    admin_server: AdminLaunched,
) -> None:
    refused = await refusal(list_user_factors(admin_server, str(uuid.uuid4())))

    assert refused == USER_NOT_FOUND


# --- RemoveUserFactor ----------------------------------------------------------


async def test_removing_a_users_factor_ends_every_session_of_the_user(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    stub = admin_server.stub
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))
    other = await sign_in_with_totp(stub, enrolled.secret, clock)
    bob = await register(stub, email="bob@example.com")

    removed = await admin_server.admin.RemoveUserFactor(
        admin_pb.RemoveUserFactorRequest(
            user_id=enrolled.user_id, factor_id=enrolled.factor_id, reason="lost phone"
        ),
        metadata=admin_server.as_operator,
    )

    assert removed.revoked_session_count == 2
    for access_token in (enrolled.access_token, other.access_token):
        assert await ended_by_factor_change(stub, access_token) == ENDED_BY_FACTOR_CHANGE
    assert (
        await stub.ListSessions(pb.ListSessionsRequest(), metadata=bearer(bob.access_token))
    ).sessions
    ended = await admin_server.admin.GetSession(
        admin_pb.AdminServiceGetSessionRequest(session_id=enrolled.session_id),
        metadata=admin_server.as_operator,
    )
    assert (ended.session.ended_by.kind, ended.session.ended_by.operator) == (
        pb.SESSION_ENDER_KIND_OPERATOR,
        OPERATOR,
    )


async def test_after_the_removal_the_user_signs_in_with_the_password_alone(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    stub = admin_server.stub
    enrolled = await enrol_and_confirm(stub, clock, await register(stub))

    await admin_server.admin.RemoveUserFactor(
        admin_pb.RemoveUserFactorRequest(user_id=enrolled.user_id, factor_id=enrolled.factor_id),
        metadata=admin_server.as_operator,
    )

    signed_in = await login(stub)
    assert signed_in.access_token
    listed = await list_user_factors(admin_server, enrolled.user_id)
    assert (list(listed.factors), listed.recovery_codes_remaining) == ([], 0)


async def test_a_removal_is_audited_with_the_operator_and_the_reason(
    admin_server: AdminLaunched, clock: FrozenClock, pool: Pool
) -> None:
    enrolled = await enrol_and_confirm(admin_server.stub, clock, await register(admin_server.stub))

    await admin_server.admin.RemoveUserFactor(
        admin_pb.RemoveUserFactorRequest(
            user_id=enrolled.user_id, factor_id=enrolled.factor_id, reason="lost phone"
        ),
        metadata=admin_server.as_operator,
    )

    [row] = await audited(pool, "admin_user_factor_removed")
    assert {key: row[key] for key in ("user_id", "operator", "factor_id", "reason")} == {
        "user_id": enrolled.user_id,
        "operator": OPERATOR,
        "factor_id": enrolled.factor_id,
        "reason": "lost phone",
    }
    assert (row["factor_type"], row["revoked_session_count"]) == ("totp", 1)


async def test_removing_a_factor_the_user_does_not_have_is_factor_not_found(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    enrolled = await enrol_and_confirm(admin_server.stub, clock, await register(admin_server.stub))
    bob = await register(admin_server.stub, email="bob@example.com")

    refused = await refusal(
        admin_server.admin.RemoveUserFactor(
            admin_pb.RemoveUserFactorRequest(user_id=bob.user_id, factor_id=enrolled.factor_id),
            metadata=admin_server.as_operator,
        )
    )

    assert refused == FACTOR_NOT_FOUND
    assert len((await list_user_factors(admin_server, enrolled.user_id)).factors) == 1


# --- SetSecondFactorRequired and GetUser ------------------------------------------


async def test_marking_an_account_shows_in_get_user_and_keeps_its_sessions(
    admin_server: AdminLaunched, pool: Pool
) -> None:
    registered = await register(admin_server.stub)

    answer = await admin_server.admin.SetSecondFactorRequired(
        admin_pb.SetSecondFactorRequiredRequest(user_id=registered.user_id, required=True),
        metadata=admin_server.as_operator,
    )

    assert answer.user.second_factor_required
    assert (await get_user(admin_server, registered.user_id)).second_factor_required
    assert answer.user.live_session_count == 1
    assert await audited(pool, "admin_second_factor_required_set") == [
        {
            "user_id": registered.user_id,
            "operator": OPERATOR,
            "via": "service_key",
            "required": True,
        }
    ]


async def test_a_marked_account_is_sent_to_enrolment_and_its_enrolment_signs_it_in(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    stub = admin_server.stub
    registered = await register(stub)
    await admin_server.admin.SetSecondFactorRequired(
        admin_pb.SetSecondFactorRequiredRequest(user_id=registered.user_id, required=True),
        metadata=admin_server.as_operator,
    )

    step = (await login(stub)).second_factor
    enrolment = await stub.EnrolTotp(
        pb.EnrolTotpRequest(pending_login_token=step.pending_login_token)
    )
    confirmed = await stub.ConfirmTotp(
        pb.ConfirmTotpRequest(
            factor_id=enrolment.factor_id,
            code=code_at(enrolment.secret, clock),
            pending_login_token=step.pending_login_token,
        )
    )

    assert step.enrolment_required
    assert len(confirmed.recovery_codes) == 10
    signed_in = confirmed.signed_in
    assert (signed_in.user_id, bool(signed_in.refresh_token)) == (registered.user_id, True)
    assert signed_in.session_id != registered.session_id
    listed = await stub.ListFactors(
        pb.ListFactorsRequest(), metadata=bearer(signed_in.access_token)
    )
    assert (len(listed.factors), listed.second_factor_required) == (1, True)


async def test_get_user_shows_the_types_of_the_users_factors(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    enrolled = await enrol_and_confirm(admin_server.stub, clock, await register(admin_server.stub))

    user = await get_user(admin_server, enrolled.user_id)

    assert list(user.factor_types) == [factors_pb.FACTOR_TYPE_TOTP]


async def test_marking_an_unknown_account_is_user_not_found(admin_server: AdminLaunched) -> None:
    refused = await refusal(
        admin_server.admin.SetSecondFactorRequired(
            admin_pb.SetSecondFactorRequiredRequest(user_id=str(uuid.uuid4()), required=True),
            metadata=admin_server.as_operator,
        )
    )

    assert refused == USER_NOT_FOUND


# --- DeleteUser and access ----------------------------------------------------------


async def test_deleting_a_user_erases_the_factors_and_recovery_codes(
    admin_server: AdminLaunched, clock: FrozenClock, pool: Pool
) -> None:
    enrolled = await enrol_and_confirm(admin_server.stub, clock, await register(admin_server.stub))

    await admin_server.admin.DeleteUser(
        admin_pb.DeleteUserRequest(user_id=enrolled.user_id, reason="asked to be forgotten"),
        metadata=admin_server.as_operator,
    )

    user_id = uuid.UUID(enrolled.user_id)
    assert [
        await pool.fetchval("SELECT count(*) FROM user_factors WHERE user_id = $1", user_id),
        await pool.fetchval("SELECT count(*) FROM recovery_codes WHERE user_id = $1", user_id),
    ] == [0, 0]


@pytest.mark.parametrize(
    ("rpc", "request_for"),
    [
        ("ListUserFactors", lambda user: admin_pb.ListUserFactorsRequest(user_id=user)),
        (
            "RemoveUserFactor",
            lambda user: admin_pb.RemoveUserFactorRequest(user_id=user, factor_id=user),
        ),
        (
            "SetSecondFactorRequired",
            lambda user: admin_pb.SetSecondFactorRequiredRequest(user_id=user, required=False),
        ),
    ],
)
async def test_a_service_that_is_not_an_operator_is_refused(
    admin_server: AdminLaunched, rpc: str, request_for: Any
) -> None:
    registered = await register(admin_server.stub)

    refused = await refusal(
        getattr(admin_server.admin, rpc)(
            request_for(registered.user_id), metadata=admin_server.as_service
        )
    )

    assert refused == NOT_ALLOWED


# --- authsvc admin --------------------------------------------------------------------


async def admin_command(admin: AdminLaunched, *args: str) -> CommandRun:
    """`authsvc admin ARGS` at the server, as the operator."""
    key = admin.as_operator[0][1].removeprefix("Bearer ")
    return await run_authsvc(
        "admin",
        *args,
        "--address",
        f"127.0.0.1:{admin.server.port}",
        env=authsvc_env(None, AUTHSVC_OPERATOR_KEY=key),
    )


async def test_the_admin_commands_mark_list_and_remove(
    admin_server: AdminLaunched, clock: FrozenClock
) -> None:
    enrolled = await enrol_and_confirm(admin_server.stub, clock, await register(admin_server.stub))
    user = ("--user-id", enrolled.user_id)

    marked = await admin_command(admin_server, "set-second-factor-required", *user, "--required")
    listed = await admin_command(admin_server, "list-user-factors", *user)
    removed = await admin_command(
        admin_server, "remove-user-factor", *user, "--factor-id", enrolled.factor_id
    )

    assert [marked.code, listed.code, removed.code] == [0, 0, 0], marked.stderr + listed.stderr
    assert json.loads(marked.stdout)["user"]["second_factor_required"] is True
    answer = json.loads(listed.stdout)
    assert [factor["factor_id"] for factor in answer["factors"]] == [enrolled.factor_id]
    assert (answer["recovery_codes_remaining"], answer["second_factor_required"]) == (10, True)
    assert json.loads(removed.stdout) == {"revoked_session_count": 1}
