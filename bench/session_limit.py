"""What a session limit adds to a login's database work: `PgSessionStore.create_session`
timed without a limit, with `evict_oldest` (each call evicts one session) and with `refuse`
(counting, never refusing), on a real PostgreSQL (embedded in a temporary directory, or
`--database-url`). No gRPC, no argon2: the login around it costs far more (an argon2id
verify with the default parameters; `bench/crypto.py`).

Run: .venv/bin/python -m bench.session_limit [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from authsvc.core.models import (
    AuditEvent,
    DeviceInfo,
    DeviceType,
    RequestOrigin,
    Session,
    SessionId,
    User,
    UserId,
)
from authsvc.core.session_limits import SessionCap, SessionLimitPolicy
from authsvc.domain.session_limits import SessionLimit
from authsvc.embedded_db import start_embedded_postgres
from authsvc.store.migrate import apply_migrations
from authsvc.store.pool import Pool, create_pool
from authsvc.store.sessions import PgSessionStore
from authsvc.store.users import PgUserStore

# Sessions the user holds: the limit (for evict_oldest, each login evicts one).
HELD = 5
_DEVICE = DeviceInfo(
    user_agent="bench/1.0",
    ip_address="127.0.0.1",
    device_type=DeviceType.OTHER,
    browser="Other",
    os="Other",
    device_name="bench",
    country="",
    city="",
)

_ORIGIN = RequestOrigin(ip_address=_DEVICE.ip_address, user_agent=_DEVICE.user_agent)


def _session(user_id: UserId, now: datetime) -> Session:
    return Session(
        id=SessionId(uuid.uuid4()),
        user_id=user_id,
        created_at=now,
        last_active_at=now,
        idle_expires_at=now + timedelta(days=7),
        expires_at=now + timedelta(days=7),
        remember_me=False,
        device=_DEVICE,
        revoked_at=None,
        revoke_reason=None,
    )


async def _timed(pool: Pool, calls: int, cap_of: SessionLimit) -> list[float]:
    """Microseconds per create_session for a new user who starts with HELD sessions."""
    store = PgSessionStore(pool)
    now = datetime.now(UTC)
    user = User(
        id=UserId(uuid.uuid4()),
        email=f"{uuid.uuid4().hex}@example.com",
        display_name="",
        password_hash="bench",
        created_at=now,
    )
    await PgUserStore(pool).create_user(user, event=AuditEvent(event="bench", occurred_at=now))
    elapsed = []
    for n in range(HELD + calls):
        at = now + timedelta(milliseconds=n)
        session = _session(user.id, at)
        cap: SessionCap | None = cap_of.cap(session.id, _ORIGIN, at)
        event = AuditEvent(event="login_succeeded", occurred_at=at, user_id=user.id)
        started = time.perf_counter()
        await store.create_session(
            session,
            token_hash=uuid.uuid4().bytes * 2,
            event=event,
            verified_hash="bench",
            signing_key_id="bench-kid",
            cap=cap,
        )
        if n >= HELD:
            elapsed.append((time.perf_counter() - started) * 1e6)
    return elapsed


async def measure(dsn: str, calls: int) -> dict[str, list[float]]:
    pool = await create_pool(
        dsn,
        min_size=1,
        max_size=2,
        connect_timeout=timedelta(seconds=10),
        statement_timeout=timedelta(seconds=10),
    )
    try:
        await apply_migrations(pool)
        limits = {
            "no limit": SessionLimit(),
            "evict_oldest": SessionLimit(max_live=HELD, policy=SessionLimitPolicy.EVICT_OLDEST),
            "refuse (counts)": SessionLimit(max_live=10**9, policy=SessionLimitPolicy.REFUSE),
        }
        # Interleaved rounds, so drift on a shared machine spreads over all three.
        results: dict[str, list[float]] = {name: [] for name in limits}
        for _ in range(3):
            for name, limit in limits.items():
                results[name] += await _timed(pool, calls // 3, limit)
        return results
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authsvc-bench-") as tmp:
        embedded = None
        dsn = args.database_url
        if not dsn:
            embedded = start_embedded_postgres(Path(tmp) / "pg")
            asyncio.run(embedded.ensure_service_database())
            dsn = embedded.dsn()
        try:
            results = asyncio.run(measure(dsn, args.calls))
        finally:
            if embedded is not None:
                embedded.stop()
    base = statistics.median(results["no limit"])
    for name, samples in results.items():
        median = statistics.median(samples)
        p90 = statistics.quantiles(samples, n=10)[-1]
        print(
            f"{name:>16}: median {median:7.0f} us  p90 {p90:7.0f} us  "
            f"x{median / base:4.2f} of no limit  n={len(samples)}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
