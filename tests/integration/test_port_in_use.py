"""A second `authsvc serve` on a port another server already serves is refused.

The occupant is a supervisor with workers, which bind with SO_REUSEPORT: the case where a
second supervisor used to join the port group, report serving, and take a share of the
first one's calls.
"""

from __future__ import annotations

import pytest

from tests.conftest import NewDatabase
from tests.processes import authsvc_env, run_authsvc, server_group

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_on_a_port_another_server_serves_exits_saying_port_in_use(
    new_database: NewDatabase, workers: str
) -> None:
    dsn = await new_database()
    async with server_group() as group:
        occupant = await group.start(dsn, AUTHSVC_WORKERS="2")

        run = await run_authsvc(
            "serve",
            "--host=127.0.0.1",
            f"--port={occupant.port}",
            env=authsvc_env(dsn, AUTHSVC_WORKERS=workers),
        )

    assert run.code != 0
    assert (
        f"authsvc: port in use: 127.0.0.1:{occupant.port} is already served by another process"
        in run.stderr
    )
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_on_an_http_port_another_server_serves_exits_saying_port_in_use(
    new_database: NewDatabase, workers: str
) -> None:
    dsn = await new_database()
    async with server_group() as group:
        occupant = await group.start(dsn, AUTHSVC_WORKERS="2", AUTHSVC_HTTP_PORT="0")

        run = await run_authsvc(
            "serve",
            "--host=127.0.0.1",
            "--port=0",
            f"--http-port={occupant.http_port}",
            env=authsvc_env(dsn, AUTHSVC_WORKERS=workers),
        )

    assert run.code != 0
    assert (
        f"authsvc: port in use: 127.0.0.1:{occupant.http_port} is already served by another "
        "process" in run.stderr
    )
    assert "Traceback" not in run.stderr
