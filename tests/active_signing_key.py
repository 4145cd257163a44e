"""Print the active signing key of a test server's database as JSON, for the Node client's tests.

The Node tests sign the claims table's tokens (clients/testdata/access_token_claims.json)
with the live server's own key, as the Python tests do with `server.keys.signing_key()`.
It loads the key the way a replica does (the configuration from the environment, the key
ring over the database), so it prints a private key: for throwaway test databases only.

    AUTHSVC_DATA_DIR=<the test server's> python -m tests.active_signing_key
"""

from __future__ import annotations

import asyncio
import json
import sys

from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from authsvc import config as config_module
from authsvc.app import build_key_ring
from authsvc.cli import with_embedded_key_encryption_keys
from authsvc.core.clock import SystemClock
from authsvc.embedded_db import start_embedded_postgres
from authsvc.store.pool import create_pool


async def _print_active_key(config: config_module.Config, dsn: str) -> None:
    pool = await create_pool(
        dsn,
        min_size=0,
        max_size=1,
        connect_timeout=config.db_connect_timeout,
        statement_timeout=config.db_statement_timeout,
    )
    try:
        keys = build_key_ring(config, pool, SystemClock())
        await keys.reload()
        kid, algorithm, private_key = keys.signing_key()
    finally:
        await pool.close()
    pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    json.dump({"kid": kid, "algorithm": algorithm, "private_key_pem": pem.decode()}, sys.stdout)


def main() -> None:
    # Decrypted with the servers' KEK: the generated one beside their embedded database.
    config = with_embedded_key_encryption_keys(config_module.from_env(), {})
    if config.database_url:
        asyncio.run(_print_active_key(config, str(config.database_url)))
        return
    # Joins the servers' embedded PostgreSQL; it keeps running while they do.
    embedded = start_embedded_postgres(config.data_dir)
    try:
        asyncio.run(_print_active_key(config, embedded.dsn()))
    finally:
        embedded.stop()


if __name__ == "__main__":
    main()
