"""The session limit across replicas: many concurrent logins of one user, spread over three
`authsvc serve` processes on one database, never leave more live sessions than the limit,
whichever policy, because each login counts and evicts with the user's row locked."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewDatabase, pool_on
from tests.helpers import PASSWORD, login
from tests.integration.test_session_limits import outcome_of
from tests.processes import server_group

pytestmark = pytest.mark.asyncio

REPLICAS = 3
LOGINS = 45
LIMIT = 2
EMAIL = "ada@example.com"
# Every login of the burst is checked at once, not admitted a few at a time by the login
# throttle's in-flight accounting (these are correct passwords: nothing fails).
ALL_ADMITTED = {
    "AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT_AND_IP": "1000",
    "AUTHSVC_LOGIN_FAILURES_PER_ACCOUNT": "1000",
    "AUTHSVC_LOGIN_FAILURES_PER_IP": "1000",
}


async def burst_of_logins(new_database: NewDatabase, policy: str) -> tuple[list[str], int, int]:
    """LOGINS concurrent logins of one user (who has no session yet) over REPLICAS servers
    with a limit of LIMIT: each login's outcome ("OK" or its ErrorInfo reason), then the
    user's live sessions and the evictions on the revocation log."""
    dsn = await new_database(migrated=True)
    async with server_group() as group:
        replicas = await asyncio.gather(
            *(
                group.start(
                    dsn,
                    AUTHSVC_SESSION_LIMIT=str(LIMIT),
                    AUTHSVC_SESSION_LIMIT_POLICY=policy,
                    **ALL_ADMITTED,
                )
                for _ in range(REPLICAS)
            )
        )
        await asyncio.gather(*(replica.until_serving() for replica in replicas))
        await replicas[0].stub.Register(pb.RegisterRequest(email=EMAIL, password=PASSWORD))

        answers = await asyncio.gather(
            *(login(replicas[n % REPLICAS].stub, EMAIL) for n in range(LOGINS)),
            return_exceptions=True,
        )

    async with pool_on(dsn, max_size=2) as pool:
        user_id: uuid.UUID = await pool.fetchval("SELECT id FROM users")
        live: int = await pool.fetchval(
            "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", user_id
        )
        evicted: int = await pool.fetchval(
            "SELECT count(*) FROM revocation_log WHERE reason = 'session_limit_evicted'"
        )
    return [outcome_of(answer) for answer in answers], live, evicted


async def test_concurrent_logins_across_replicas_evicting_answer_all_and_leave_the_limit(
    new_database: NewDatabase,
) -> None:
    outcomes, live, evicted = await burst_of_logins(new_database, "evict_oldest")

    assert Counter(outcomes) == {"OK": LOGINS}
    assert live == LIMIT
    assert evicted == LOGINS - LIMIT


async def test_concurrent_logins_across_replicas_refusing_admit_exactly_the_limit(
    new_database: NewDatabase,
) -> None:
    outcomes, live, evicted = await burst_of_logins(new_database, "refuse")

    assert Counter(outcomes) == {"OK": LIMIT, "SESSION_LIMIT_REACHED": LOGINS - LIMIT}
    assert live == LIMIT
    assert evicted == 0
