"""Login throttling: per account and per client address, shared through PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from authsvc.core.clock import FrozenClock
from authsvc.domain.throttle import IN_FLIGHT_EXPIRY, account_bucket, escalated_account_bucket
from authsvc.store.pool import Pool
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import Launch
from tests.helpers import PASSWORD, Stub, error_info, login, register
from tests.processes import eventually, started

pytestmark = pytest.mark.asyncio

WRONG = "not the password"
EMAIL = "alice@example.com"  # the helpers' default account
WINDOW = timedelta(minutes=15)  # the default window


async def failed_login(
    stub: Stub,
    email: str = "alice@example.com",
    password: str = WRONG,
    *,
    forwarded_for: str | None = None,
) -> str:
    """The reason of a Login that must fail; from `forwarded_for` as a trusted proxy says."""
    metadata = () if forwarded_for is None else (("x-forwarded-for", forwarded_for),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Login(pb.LoginRequest(email=email, password=password), metadata=metadata)
    return error_info(caught.value)[1]


async def lock_out(stub: Stub) -> None:
    """Register the helpers' account and fail its login from this address until its
    limit there (the default 5) is spent."""
    await register(stub)
    for _ in range(5):
        await failed_login(stub)


def retry_delay(error: grpc.aio.AioRpcError) -> timedelta:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay: timedelta = info.retry_delay.ToTimedelta()
            return delay
    raise AssertionError("no RetryInfo in the status")


async def test_sixth_login_after_five_failures_is_rate_limited_even_with_the_password(
    stub: Stub,
) -> None:
    await register(stub)
    for _ in range(5):
        assert await failed_login(stub) == "INVALID_CREDENTIALS"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(stub)

    code, reason, _ = error_info(caught.value)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")


async def test_rate_limited_answer_says_when_to_retry(stub: Stub, clock: FrozenClock) -> None:
    await lock_out(stub)
    clock.advance(timedelta(minutes=5))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(stub)

    assert retry_delay(caught.value) == WINDOW - timedelta(minutes=5)


async def test_unknown_email_is_throttled_like_a_known_one(stub: Stub) -> None:
    for _ in range(5):
        assert await failed_login(stub, email="nobody@example.com") == "INVALID_CREDENTIALS"

    assert await failed_login(stub, email="nobody@example.com") == "RATE_LIMITED"


async def test_throttle_decays_after_the_window(stub: Stub, clock: FrozenClock) -> None:
    await lock_out(stub)
    clock.advance(WINDOW)

    response = await login(stub)

    assert response.access_token


async def test_successful_login_resets_the_account_count(stub: Stub) -> None:
    await register(stub)
    for _ in range(4):
        await failed_login(stub)
    await login(stub)
    for _ in range(4):
        await failed_login(stub)

    response = await login(stub)

    assert response.access_token


async def test_throttling_one_account_leaves_others_alone(stub: Stub) -> None:
    await register(stub)
    await register(stub, email="bob@example.com")
    for _ in range(5):
        await failed_login(stub)

    response = await login(stub, email="bob@example.com")

    assert response.access_token


async def test_one_address_failing_across_accounts_is_rate_limited(
    launch: Launch, clock: FrozenClock
) -> None:
    launched = await launch(login_failures_per_ip="3", login_failures_per_account="100")
    for number in range(3):
        await failed_login(launched.stub, email=f"user{number}@example.com")
    clock.advance(timedelta(minutes=1))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await login(launched.stub, email="another@example.com", password=WRONG)

    assert error_info(caught.value)[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert retry_delay(caught.value) == WINDOW - timedelta(minutes=1)


async def test_parallel_guesses_through_two_replicas_get_exactly_the_limit(
    launch: Launch,
) -> None:
    # Guesses sent at once must not all pass the check before any of them is counted.
    first, second = await launch(), await launch()
    await register(first.stub)

    reasons = await asyncio.gather(*(failed_login(stub) for stub in [first.stub, second.stub] * 10))

    assert sorted(reasons) == ["INVALID_CREDENTIALS"] * 5 + ["RATE_LIMITED"] * 15
    assert await failed_login(first.stub, password=PASSWORD) == "RATE_LIMITED"


# A row per write, not one counter row: writers would queue on it (and on Citus, holding
# it on one worker while waiting for it on another, deadlock).
_COUNTER = ("CREATE TABLE counted_writes (written boolean NOT NULL)",)
_COUNTING = (
    "CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN INSERT INTO counted_writes VALUES (true); RETURN NEW; END $$"
)
_COUNTED = "SELECT count(*) FROM counted_writes"
_COUNT_ON = (
    "CREATE TRIGGER count_write AFTER INSERT OR UPDATE ON {}"
    " FOR EACH ROW EXECUTE FUNCTION count_write()"
)


@asynccontextmanager
async def counting_writes(pool: Pool, table: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Count the row versions written to `table` inside the block; the count is read by
    the function it yields. A row trigger counts; on Citus, which refuses triggers on a
    distributed table, one on each of its shards, counting on each worker."""
    citus = await pool.fetchval("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus')")
    if not citus:
        await pool.execute(";".join((*_COUNTER, _COUNTING, _COUNT_ON.format(table))))

        async def counted() -> int:
            n: int = await pool.fetchval(_COUNTED)
            return n

        try:
            yield counted
        finally:
            await pool.execute(
                f"DROP TRIGGER count_write ON {table}; DROP FUNCTION count_write();"
                " DROP TABLE counted_writes"
            )
        return
    on_workers = "SELECT success, result FROM run_command_on_workers($1)"
    on_shards = "SELECT success, result FROM run_command_on_shards($1, $2)"

    async def everywhere(query: str, *args: str) -> list[str]:
        rows = await pool.fetch(query, *args)
        assert all(row["success"] for row in rows), rows
        return [row["result"] for row in rows]

    # The table on each worker, where the shards' triggers run; the function from here,
    # which Citus creates on every node (a worker refuses to create one itself).
    for statement in _COUNTER:
        await everywhere(on_workers, statement)
    await pool.execute(_COUNTING)
    await everywhere(on_shards, table, _COUNT_ON.format("%s"))

    async def total() -> int:
        return sum(int(n) for n in await everywhere(on_workers, _COUNTED))

    try:
        yield total
    finally:
        await everywhere(on_shards, table, "DROP TRIGGER count_write ON %s")
        await pool.execute("DROP FUNCTION count_write()")
        await everywhere(on_workers, "DROP TABLE counted_writes")


async def test_parallel_refused_attempts_write_at_most_their_one_try_each(
    launch: Launch, pool: Pool
) -> None:
    # One address guessing many accounts at once: attempts waiting for the address's
    # slots, then refused, must not write a row version per poll.
    launched = await launch(login_failures_per_ip="3")
    async with counting_writes(pool, "login_failures") as writes:
        reasons = await asyncio.gather(
            *(failed_login(launched.stub, email=f"user{n}@example.com") for n in range(40))
        )
        written = await writes()

    assert sorted(reasons) == ["INVALID_CREDENTIALS"] * 3 + ["RATE_LIMITED"] * 37
    # Each attempt counts in 4 buckets (pair, account, account-day, address). A refused
    # one may have locked them once, in its one try at admission; a failed one locked
    # them to be admitted, again to count, and counted: 3 writes each.
    assert written <= 37 * 4 + 3 * 3 * 4


async def test_a_burst_of_correct_logins_over_the_limit_all_succeed(stub: Stub, pool: Pool) -> None:
    # Attempts over the limit only because others are still being checked wait for a
    # slot instead of being refused: parallel sign-ins are not guesses.
    await register(stub)

    signed_in = await asyncio.gather(*(login(stub) for _ in range(12)))

    assert len({response.session_id for response in signed_in}) == 12
    assert await pool.fetchval("SELECT count(*) FROM login_attempts_in_flight") == 0


async def test_successful_logins_do_not_use_up_the_address_limit(launch: Launch) -> None:
    launched = await launch(login_failures_per_ip="3")
    await register(launched.stub)
    for _ in range(5):
        await login(launched.stub)

    assert await failed_login(launched.stub) == "INVALID_CREDENTIALS"


async def test_failures_through_one_replica_count_on_another(launch: Launch) -> None:
    first, second = await launch(), await launch()
    await lock_out(first.stub)

    assert await failed_login(second.stub, password=PASSWORD) == "RATE_LIMITED"


async def test_sweeper_removes_counters_whose_window_has_passed(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch()
    await failed_login(launched.stub)
    clock.advance(WINDOW)

    counts = await launched.server.sweeper.run_once()

    assert counts is not None
    # The account's from this address, the account's and the address's; the account's
    # day bucket stays for its day.
    assert counts["login_failures"] == 3
    assert await pool.fetchval("SELECT bucket FROM login_failures") == escalated_account_bucket(
        EMAIL
    )


async def test_refused_logins_are_audited_once_per_address_with_a_count(
    launch: Launch, pool: Pool
) -> None:
    launched = await launch()
    await lock_out(launched.stub)

    for _ in range(30):
        assert await failed_login(launched.stub, password=PASSWORD) == "RATE_LIMITED"
    await launched.server.refusals.flush()

    rows = await pool.fetch(
        "SELECT ip_address, detail FROM audit_events"
        " WHERE event = 'login_failed' AND detail->>'reason' = 'rate_limited'"
    )
    assert [(row["ip_address"], row["detail"]["count"]) for row in rows] == [("127.0.0.1", 30)]


async def test_refusals_from_one_ipv6_network_are_audited_as_one_client(
    launch: Launch, pool: Pool
) -> None:
    # An IPv6 host holds a whole /64: rotating addresses within it must not buy a row each.
    launched = await launch(trusted_proxies="127.0.0.1/32")
    await register(launched.stub)

    async def login_from(host: int, password: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError):
            await launched.stub.Login(
                pb.LoginRequest(email=EMAIL, password=password),
                metadata=(("x-forwarded-for", f"2001:db8:1:2::{host:x}"),),
            )

    for host in range(5):
        await login_from(host, WRONG)
    for host in range(5, 25):
        await login_from(host, PASSWORD)
    await launched.server.refusals.flush()

    counts = await pool.fetch(
        "SELECT detail->'count' AS count FROM audit_events"
        " WHERE event = 'login_failed' AND detail->>'reason' = 'rate_limited'"
    )
    assert [row["count"] for row in counts] == [20]


async def test_refusal_counts_a_failed_write_kept_are_written_by_the_next_flush(
    launch: Launch, pool: Pool
) -> None:
    launched = await launch()
    await lock_out(launched.stub)
    for _ in range(3):
        await failed_login(launched.stub, password=PASSWORD)
    # A real write failure that is not an outage (as a full disk would be).
    await pool.execute(
        "CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'no room'; END $$;"
        " CREATE TRIGGER refuse_insert BEFORE INSERT ON audit_events"
        " FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
    )
    try:
        with pytest.raises(Exception, match="no room"):
            await launched.server.refusals.flush()
    finally:
        await pool.execute(
            "DROP TRIGGER refuse_insert ON audit_events; DROP FUNCTION refuse_insert()"
        )
    await failed_login(launched.stub, password=PASSWORD)

    await launched.server.refusals.flush()

    counts = await pool.fetch(
        "SELECT detail->'count' AS count FROM audit_events WHERE detail->>'reason' = 'rate_limited'"
    )
    assert [row["count"] for row in counts] == [4]


async def test_a_refused_login_writes_no_row(launch: Launch, pool: Pool) -> None:
    launched = await launch()
    await lock_out(launched.stub)
    # Every row version the throttle tables hold: an UPDATE, even of nothing, makes new ones.
    versions = "SELECT array_agg(xmin::text ORDER BY xmin::text) FROM login_failures"
    before = await pool.fetchval(versions)
    audit_rows = await pool.fetchval("SELECT count(*) FROM audit_events")

    for _ in range(10):
        assert await failed_login(launched.stub, password=PASSWORD) == "RATE_LIMITED"

    assert await pool.fetchval(versions) == before
    assert await pool.fetchval("SELECT count(*) FROM audit_events") == audit_rows
    assert await pool.fetchval("SELECT count(*) FROM login_attempts_in_flight") == 0


async def test_refused_logins_log_once_per_address_until_the_counts_are_written(
    launch: Launch, caplog: pytest.LogCaptureFixture
) -> None:
    launched = await launch()
    await lock_out(launched.stub)

    with caplog.at_level(logging.INFO):
        for _ in range(20):
            await failed_login(launched.stub, password=PASSWORD)
        await launched.server.refusals.flush()

    throttled = [r for r in caplog.records if getattr(r, "event", None) == "throttled"]
    # The first refusal at once, then one line with the interval's count.
    assert [getattr(r, "count", 1) for r in throttled] == [1, 20]
    # And one access-log line for the twenty refused calls, not twenty.
    refused_calls = [
        r
        for r in caplog.records
        if getattr(r, "event", None) == "rpc" and getattr(r, "code", "") == "RESOURCE_EXHAUSTED"
    ]
    assert len(refused_calls) == 1


async def test_a_login_cut_off_by_its_deadline_gives_its_slot_back_uncounted(
    launch: Launch, pool: Pool
) -> None:
    # Costly hashing, so the password check (a dummy hash: no such account) is still
    # running when the deadline passes.
    launched = await launch(argon2_time_cost="40", argon2_memory_kib="65536")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await launched.stub.Login(
            pb.LoginRequest(email="alice@example.com", password=WRONG), timeout=0.2
        )

    async def settled() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 0 FROM login_attempts_in_flight"))

    await eventually(settled)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert await pool.fetchval("SELECT sum(failures) FROM login_failures") == 0


OTHER = "another@example.com"


async def test_behind_a_trusted_proxy_each_client_address_has_its_own_limit(
    launch: Launch,
) -> None:
    # Without x-forwarded-for from the proxy, every user behind it would share one bucket.
    launched = await launch(
        trusted_proxies="127.0.0.1/32", login_failures_per_ip="3", login_failures_per_account="100"
    )

    for number in range(3):
        await failed_login(launched.stub, f"user{number}@example.com", forwarded_for="203.0.113.1")

    assert await failed_login(launched.stub, OTHER, forwarded_for="203.0.113.1") == "RATE_LIMITED"
    assert (
        await failed_login(launched.stub, OTHER, forwarded_for="203.0.113.2")
        == "INVALID_CREDENTIALS"
    )


async def test_one_ipv6_network_shares_one_address_limit(launch: Launch) -> None:
    # A host holds a whole /64: a fresh address in it must not buy a fresh limit.
    launched = await launch(
        trusted_proxies="127.0.0.1/32", login_failures_per_ip="3", login_failures_per_account="100"
    )

    for number in range(3):
        await failed_login(
            launched.stub, f"user{number}@example.com", forwarded_for=f"2001:db8:1:2::{number + 1}"
        )

    assert await failed_login(launched.stub, OTHER, forwarded_for="2001:db8:1:2:ffff::9") == (
        "RATE_LIMITED"
    )
    assert await failed_login(launched.stub, OTHER, forwarded_for="2001:db8:1:3::1") == (
        "INVALID_CREDENTIALS"
    )


async def test_a_large_burst_of_correct_logins_all_succeed_without_deadlock(
    stub: Stub, pool: Pool
) -> None:
    # Admissions and settlements lock the same bucket rows; in one order they never
    # deadlock (a deadlock victim would answer UNAVAILABLE).
    await register(stub)
    await register(stub, email="bob@example.com")

    answers = await asyncio.gather(
        *(login(stub, email="bob@example.com" if n % 5 == 0 else EMAIL) for n in range(60)),
        return_exceptions=True,
    )

    assert [a for a in answers if isinstance(a, BaseException)] == []
    assert await pool.fetchval("SELECT count(*) FROM login_attempts_in_flight") == 0


async def test_attempts_of_a_replica_that_died_mid_login_stop_counting_and_are_swept(
    launch: Launch, clock: FrozenClock, pool: Pool
) -> None:
    launched = await launch(login_failures_per_account="1")
    await register(launched.stub)
    # What a replica killed while checking a password leaves behind, long enough ago.
    admitted_at = clock.now() - IN_FLIGHT_EXPIRY - timedelta(seconds=1)
    await pool.execute(
        "INSERT INTO login_attempts_in_flight (attempt_id, bucket, admitted_at)"
        " VALUES (gen_random_uuid(), $1, $2)",
        account_bucket(EMAIL),
        admitted_at,
    )

    signed_in = await login(launched.stub)
    counts = await launched.server.sweeper.run_once()

    assert signed_in.access_token
    assert counts is not None
    assert counts["stale_login_attempts"] == 1
    assert await pool.fetchval("SELECT count(*) FROM login_attempts_in_flight") == 0


async def test_the_lockout_window_starts_at_the_first_failure_whatever_came_before(
    stub: Stub, clock: FrozenClock
) -> None:
    # Were it to start at the account's first attempt of any kind, a shorter RetryInfo
    # would tell an attacker that the account exists and was used recently.
    await register(stub)
    await login(stub)
    clock.advance(timedelta(minutes=10))
    for _ in range(5):
        await failed_login(stub)

    with pytest.raises(grpc.aio.AioRpcError) as known:
        await login(stub)
    for _ in range(5):
        await failed_login(stub, email="nobody@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await login(stub, email="nobody@example.com")

    assert retry_delay(known.value) == WINDOW
    assert retry_delay(unknown.value) == WINDOW


async def test_stopping_one_server_does_not_wait_for_another_servers_pending_settlement(
    launch: Launch, pool: Pool
) -> None:
    # Two servers in one process: each drains its own throttle's tasks, not the other's.
    stopping, busy = await launch(), await launch()

    async def settlement_waiting() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%INSERT INTO audit_events%'"
            )
        )

    async with pool.acquire() as blocker, blocker.transaction():
        # A failure is settled with its audit row, which waits here: reads go on.
        await blocker.execute("LOCK TABLE audit_events IN EXCLUSIVE MODE")
        pending = started(failed_login(busy.stub))
        await eventually(settlement_waiting)

        await stopping.server.stop(None)

        # Waiting for it instead, the stop would have outlasted its statement timeout.
        still_waiting = await settlement_waiting()
    assert still_waiting
    assert await pending == "INVALID_CREDENTIALS"
