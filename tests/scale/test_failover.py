"""Failover to a synchronous standby under a steady Refresh load loses no acknowledged rotation.

The scenario (tests/scale/failover_scenario.py) runs once for each way a primary stops taking
writes (`Switch`): ROUNDS failovers, each a SIGKILL of the primary (or a read-only fence of it)
and a `pg_ctl promote` of the standby, while clients refresh their sessions in a loop. Each
test asserts one thing the scenario's clients depend on; the checks after it go through a
`serve` process started after the last failover, so they read what the new primary holds,
not what the first server remembers. Timing is measured by
`python -m bench.failover`, never asserted here.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from authsvc.v1 import auth_service_pb2 as pb
from tests.helpers import PASSWORD, Stub, bearer, error_info
from tests.processes import ServerProcess
from tests.scale.failover_scenario import OK, FailoverRun, Switch, run_failovers, serve_on
from tests.scale.replicated_postgres import ReplicatedPostgres

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Two: the second fails over onto a standby the harness rebuilt after the first.
ROUNDS = 2
# One fewer than the default limit of failed logins per account and address (5).
THROTTLE_FAILURES = 4
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


@dataclass(frozen=True, slots=True)
class AfterFailovers:
    run: FailoverRun
    # A server process started after the last failover, on the same two-host URL.
    server: ServerProcess

    @property
    def stub(self) -> Stub:
        return self.server.stub


@pytest_asyncio.fixture(
    scope="module", loop_scope="session", params=list(Switch), ids=lambda switch: switch.value
)
async def after(request: pytest.FixtureRequest) -> AsyncIterator[AfterFailovers]:
    with tempfile.TemporaryDirectory(prefix="authsvc-failover-") as root:
        cluster = ReplicatedPostgres(Path(root))
        try:
            await cluster.start()
            run = await run_failovers(
                cluster, ROUNDS, switch=request.param, throttle_failures=THROTTLE_FAILURES
            )
            async with serve_on(cluster) as server:
                yield AfterFailovers(run, server)
        finally:
            await cluster.close()


def _tally(run: FailoverRun) -> dict[str, int]:
    counted: dict[str, int] = {}
    for call in run.calls:
        name = f"{call.outcome[0].name} {call.outcome[1]}".strip()
        counted[name] = counted.get(name, 0) + 1
    return counted


async def test_calls_during_a_failover_fail_only_with_unavailable(after: AfterFailovers) -> None:
    wrong = [call for call in after.run.calls if call.outcome not in (OK, UNAVAILABLE)]

    assert not wrong, f"answered neither OK nor UNAVAILABLE: {wrong[:5]}; {_tally(after.run)}"
    # Not vacuous: every round's switch was met by calls that failed, and then answered.
    assert len(after.run.failovers) == ROUNDS
    assert all(failover.failed for failover in after.run.failovers), _tally(after.run)


async def test_every_clients_newest_rotation_refreshes_after_the_failovers(
    after: AfterFailovers,
) -> None:
    # The load's own next call after each switch already used the pair it last saw
    # acknowledged (any refusal fails the test above); these are the last ones.
    for pair in after.run.held:
        answer = await after.stub.Refresh(pb.RefreshRequest(refresh_token=pair.refresh_token))

        assert answer.session_id == pair.session_id


async def test_no_session_is_revoked_but_the_ones_revoked_on_purpose(after: AfterFailovers) -> None:
    # A session revoked as reuse would be in the revocation feed too.
    revoked_on_purpose = {failover.revoked_session for failover in after.run.failovers}
    page = await after.stub.ListSessions(
        pb.ListSessionsRequest(page_size=100), metadata=bearer(after.run.held[0].access_token)
    )
    live = {session.session_id for session in page.sessions}

    assert set(after.run.subscriber_seen) == revoked_on_purpose
    assert {pair.session_id for pair in after.run.held} <= live
    assert not live & revoked_on_purpose


async def test_login_failures_before_the_failovers_still_count_after_them(
    after: AfterFailovers,
) -> None:
    email = after.run.throttled_email
    with pytest.raises(grpc.aio.AioRpcError) as last_failure:
        await after.stub.Login(pb.LoginRequest(email=email, password="wrong password"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await after.stub.Login(pb.LoginRequest(email=email, password=PASSWORD))

    assert error_info(last_failure.value)[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert error_info(refused.value)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_access_tokens_signed_before_the_failovers_validate_after_them(
    after: AfterFailovers,
) -> None:
    answer = await after.stub.ValidateToken(
        pb.ValidateTokenRequest(access_token=after.run.access_token_before)
    )

    assert answer.active, answer.inactive_reason


async def test_revocation_feed_resumes_from_its_cursor_on_each_new_primary(
    after: AfterFailovers,
) -> None:
    # One subscriber, connected before the first failover, saw each round's revocation
    # (made after that round's switch), in order, after the cursor it started from.
    seen = after.run.subscriber_seen
    revoked = [failover.revoked_session for failover in after.run.failovers]

    assert after.run.subscriber_ended is None
    assert set(revoked) <= set(seen), (revoked, seen)
    cursors = [after.run.cursor_before, *(seen[session_id] for session_id in revoked)]
    assert cursors == sorted(set(cursors))
