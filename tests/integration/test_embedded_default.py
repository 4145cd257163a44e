"""`authsvc serve` with no database configured: the embedded PostgreSQL default."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest

from tests.helpers import login, register
from tests.processes import server_group

pytestmark = pytest.mark.asyncio


async def test_serve_without_a_database_url_keeps_its_data_in_the_data_dir(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "authsvc-data"
    pgdata = data_dir / "postgres"

    async with server_group() as group:
        first = await group.start_ready(None, AUTHSVC_DATA_DIR=str(data_dir))
        registered = await register(first.stub)
        running_while_serving = (pgdata / "postmaster.pid").exists()
        first.terminate(signal.SIGINT)  # Ctrl-C, as the README's quick start says
        first_exit = await first.wait()

    assert first_exit == 0, first.stderr_tail
    assert f"embedded PostgreSQL data directory: {pgdata}" in first.stderr_tail
    assert running_while_serving
    # The embedded server stopped with the service (its pid file goes when it stops).
    assert not (pgdata / "postmaster.pid").exists()

    async with server_group() as group:
        second = await group.start_ready(None, AUTHSVC_DATA_DIR=str(data_dir))
        signed_in = await login(second.stub)
        second.terminate()
        second_exit = await second.wait()

    assert second_exit == 0, second.stderr_tail
    assert signed_in.user_id == registered.user_id
    assert not (pgdata / "postmaster.pid").exists()


async def test_serve_without_a_database_url_keeps_a_private_key_encryption_key_beside_the_database(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "authsvc-data"

    async with server_group() as group:
        server = await group.start_ready(None, AUTHSVC_DATA_DIR=str(data_dir))
        server.terminate()
        exit_code = await server.wait()

    assert exit_code == 0, server.stderr_tail
    kek_file = data_dir / "key-encryption-keys"
    # Owner-only, and outside <data_dir>/postgres: a copy of the database lacks it.
    assert stat.S_IMODE(kek_file.stat().st_mode) == 0o600
    assert (data_dir / "postgres") not in kek_file.parents
