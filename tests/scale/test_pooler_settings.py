"""AUTHSVC_DATABASE_POOLER: what a service behind PgBouncer must also be told, refused at start
when missing, rather than failing later on the first LISTEN or webhook event."""

from __future__ import annotations

import base64

import pytest

from authsvc import config as config_module
from authsvc.config import ConfigError
from authsvc.core.pooler import DatabasePooler

BOUNCER = "postgresql://authsvc@pgbouncer:6432/authsvc"
DIRECT = "postgresql://authsvc@db:5432/authsvc"
BEHIND_PGBOUNCER = {
    "AUTHSVC_DATABASE_URL": BOUNCER,
    "AUTHSVC_KEY_ENCRYPTION_KEYS": "k1:" + "A" * 43 + "=",
    "AUTHSVC_DATABASE_POOLER": "pgbouncer-transaction",
}


def test_behind_pgbouncer_with_a_direct_url_is_accepted() -> None:
    config = config_module.from_env(
        environ={**BEHIND_PGBOUNCER, "AUTHSVC_LISTEN_DATABASE_URL": DIRECT}
    )

    assert config.database_pooler is DatabasePooler.PGBOUNCER_TRANSACTION


def test_behind_pgbouncer_without_a_direct_url_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ=BEHIND_PGBOUNCER)

    assert "AUTHSVC_LISTEN_DATABASE_URL" in str(caught.value)


def test_behind_pgbouncer_webhooks_are_refused_as_their_settings_cannot_pass() -> None:
    environ = {
        **BEHIND_PGBOUNCER,
        "AUTHSVC_LISTEN_DATABASE_URL": DIRECT,
        "AUTHSVC_WEBHOOK_URLS": "https://hooks.example.com/authsvc",
        "AUTHSVC_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"n" * 32).decode(),
    }

    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ=environ)

    assert "AUTHSVC_WEBHOOK_URLS" in str(caught.value)


def test_an_unknown_pooler_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.from_env(environ={"AUTHSVC_DATABASE_POOLER": "pgbouncer-session"})

    assert "none or pgbouncer-transaction" in str(caught.value)
