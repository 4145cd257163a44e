"""Webhooks are refused on Citus (docs/operations.md): their outbox is written by triggers on
sessions, which Citus refuses on a distributed table. `authsvc serve` finds the extension as
it starts and exits naming the setting, before migrating anything, rather than run without
ever sending an event. A coordinator alone suffices: the check is the extension."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from tests.processes import authsvc_env, run_authsvc
from tests.scale.citus_cluster import CitusCluster

pytestmark = pytest.mark.asyncio

WEBHOOKS = {
    "AUTHSVC_WEBHOOK_URLS": "https://hooks.example.com/authsvc",
    "AUTHSVC_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"w" * 32).decode(),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def citus_dsn() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="authsvc-citus-webhooks-") as root:
        cluster = CitusCluster(Path(root), workers=0)
        try:
            await cluster.start()
            yield await cluster.create_database("authsvc")
        finally:
            await cluster.stop()


async def test_serve_with_webhooks_on_citus_exits_naming_the_setting_and_migrates_nothing(
    citus_dsn: str,
) -> None:
    run = await run_authsvc("serve", env=authsvc_env(citus_dsn, AUTHSVC_PORT="0", **WEBHOOKS))

    conn = await asyncpg.connect(citus_dsn)
    try:
        migrated = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    finally:
        await conn.close()
    assert run.code != 0
    assert "AUTHSVC_WEBHOOK_URLS" in run.stderr
    assert "Citus" in run.stderr
    assert not migrated
