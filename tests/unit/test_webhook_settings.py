"""The webhook settings, the retry schedule and the signature, without a server."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from authsvc import config as config_module
from authsvc.config import Config, ConfigError
from authsvc.domain.webhook_deliveries import RETRY_SCHEDULE, retry_delay
from authsvc.domain.webhook_signing import signature_header

OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
URL = "https://hooks.example.com/authsvc"


def _from_env(**environ: str) -> Config:
    return config_module.from_env(environ=environ)


def test_webhooks_are_off_by_default() -> None:
    config = _from_env()

    assert config.webhook_urls == ()
    assert config.webhook_secrets is None


def test_urls_and_a_secret_are_read() -> None:
    config = _from_env(
        AUTHSVC_WEBHOOK_URLS=f"{URL}, http://10.0.0.7:8080/in?via=authsvc",
        AUTHSVC_WEBHOOK_SECRET=NEW,
    )

    assert config.webhook_urls == (URL, "http://10.0.0.7:8080/in?via=authsvc")
    assert config.webhook_secrets is not None
    assert config.webhook_secrets.keys == (b"n" * 32,)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "file:///etc/passwd",
        "hooks.example.com/authsvc",
        "https://user:password@hooks.example.com/",
        "https://hooks.example.com/#fragment",
        "https:///no-host",
    ],
)
def test_a_url_that_is_not_plain_http_is_refused_at_start_up(url: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_WEBHOOK_URLS"):
        _from_env(AUTHSVC_WEBHOOK_URLS=url, AUTHSVC_WEBHOOK_SECRET=NEW)


def test_urls_without_a_secret_are_refused() -> None:
    with pytest.raises(ConfigError, match="needs AUTHSVC_WEBHOOK_SECRET"):
        _from_env(AUTHSVC_WEBHOOK_URLS=URL)


@pytest.mark.parametrize(
    "secret",
    [
        base64.b64encode(b"n" * 32).decode(),  # no whsec_ prefix
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
    ],
)
def test_a_malformed_secret_is_refused_without_repeating_it(secret: str) -> None:
    with pytest.raises(ConfigError, match="AUTHSVC_WEBHOOK_SECRET") as caught:
        _from_env(AUTHSVC_WEBHOOK_URLS=URL, AUTHSVC_WEBHOOK_SECRET=secret)

    assert secret not in str(caught.value)


def test_the_secret_never_prints(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(NEW + "\n")

    config = _from_env(AUTHSVC_WEBHOOK_URLS=URL, AUTHSVC_WEBHOOK_SECRET_FILE=str(secret_file))

    shown = repr(config)
    assert config.webhook_secrets is not None
    assert NEW.removeprefix("whsec_") not in shown
    assert "'***'" in repr(config.webhook_secrets)


def test_the_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(NEW)

    with pytest.raises(ConfigError, match="not both"):
        _from_env(
            AUTHSVC_WEBHOOK_URLS=URL,
            AUTHSVC_WEBHOOK_SECRET=NEW,
            AUTHSVC_WEBHOOK_SECRET_FILE=str(secret_file),
        )


def test_a_delivery_signed_with_two_secrets_verifies_with_either() -> None:
    # Rotation: receivers holding the old secret and those holding the new both accept.
    body = b'{"type":"session.created"}'
    now = int(datetime.now(UTC).timestamp())
    keys = [base64.b64decode(s.removeprefix("whsec_")) for s in (NEW, OLD)]
    headers = {
        "webhook-id": "msg-1",
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header(keys, "msg-1", now, body),
    }

    for secret in (NEW, OLD):
        assert Webhook(secret).verify(body, headers) == {"type": "session.created"}
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


def test_a_delivery_is_given_up_after_the_schedules_last_wait() -> None:
    rng = random.Random(7)

    delays = [retry_delay(attempts, rng) for attempts in range(1, len(RETRY_SCHEDULE) + 2)]

    assert delays[-1] is None
    assert all(delay is not None for delay in delays[:-1])


def test_each_wait_is_within_a_fifth_of_the_schedule() -> None:
    rng = random.Random(7)

    for attempts, base in enumerate(RETRY_SCHEDULE, start=1):
        for _ in range(50):
            delay = retry_delay(attempts, rng)
            assert delay is not None
            assert base * 0.8 <= delay <= base * 1.2
