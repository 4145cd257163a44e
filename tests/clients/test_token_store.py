"""Token stores: what a TokenManager's pair survives."""

from __future__ import annotations

import os
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from authsvc_client import FileTokenStore, InMemoryTokenStore, TokenPair

pytestmark = pytest.mark.asyncio

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def _pair(access_token: str = "access-1", refresh_token: str = "refresh-1") -> TokenPair:
    return TokenPair(
        access_token=access_token,
        access_token_expires_at=NOW + timedelta(minutes=15),
        refresh_token=refresh_token,
        refresh_token_expires_at=NOW + timedelta(days=7),
        session_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
    )


async def test_file_store_loads_the_pair_it_saved(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    pair = _pair()
    await store.save(pair)

    loaded = await FileTokenStore(tmp_path / "tokens.json").load()

    assert loaded == pair


async def test_file_store_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    path.chmod(0o644)

    await FileTokenStore(path).save(_pair())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_file_store_save_replaces_the_file_and_leaves_no_temporary_files(
    tmp_path: Path,
) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    await store.save(_pair(refresh_token="refresh-1"))

    await store.save(_pair(refresh_token="refresh-2"))

    loaded = await store.load()
    assert loaded is not None
    assert loaded.refresh_token == "refresh-2"
    assert os.listdir(tmp_path) == ["tokens.json"]


async def test_file_store_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "config" / "authsvc" / "tokens.json"

    await FileTokenStore(path).save(_pair())

    assert path.is_file()


async def test_file_store_clear_removes_the_file(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    await store.save(_pair())

    await store.clear()

    assert not (tmp_path / "tokens.json").exists()


async def test_file_store_without_a_file_loads_as_signed_out(tmp_path: Path) -> None:
    loaded = await FileTokenStore(tmp_path / "tokens.json").load()

    assert loaded is None


async def test_file_store_with_a_corrupt_file_loads_as_signed_out(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"version": 1, "access_token": ')

    loaded = await FileTokenStore(path).load()

    assert loaded is None


async def test_in_memory_store_forgets_the_pair_on_clear() -> None:
    store = InMemoryTokenStore(_pair())

    await store.clear()

    assert await store.load() is None
