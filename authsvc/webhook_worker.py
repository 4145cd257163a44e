"""The webhook worker: posts the outbox's due deliveries, signed, and records what came of
each. Every replica runs one; SKIP LOCKED claims keep them from posting a delivery twice
at once (at least once overall: a receiver dedupes by `webhook-id`)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import aiohttp

from authsvc.core.clock import Clock
from authsvc.core.errors import DatabaseUnavailable
from authsvc.core.webhooks import ClaimedDelivery, DeliveryOutcome, WebhookDeliveryState
from authsvc.domain.webhook_deliveries import WebhookDeliveryStore, retry_delay
from authsvc.domain.webhook_signing import signature_header
from authsvc.telemetry import metrics

__all__ = ["WebhookWorker", "payload_of"]

_log = logging.getLogger(__name__)

# Longest error text kept on a delivery.
_MAX_ERROR = 200
# The backlog gauge counts this far; past it the number only says "a lot".
_BACKLOG_COUNTED = 100_000


def _instant(moment: datetime) -> str:
    # As migration 0023's webhook_instant writes the data's instants.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def payload_of(delivery: ClaimedDelivery) -> bytes:
    """The body: {"type", "timestamp", "data"} as Standard Webhooks recommends, the same
    bytes on every attempt."""
    body = {
        "type": delivery.event_type,
        "timestamp": _instant(delivery.occurred_at),
        "data": delivery.data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


class WebhookWorker:
    """Claims due deliveries in batches of `concurrency`, posts each once with `timeout`,
    and settles them: 2xx is DELIVERED; anything else is tried again on the retry
    schedule and FAILED when it runs out. It holds no database connection while it waits
    on HTTP, and nothing on an RPC's path waits on it."""

    def __init__(
        self,
        store: WebhookDeliveryStore,
        clock: Clock,
        *,
        endpoints: Sequence[str],
        secrets: Sequence[bytes],
        timeout: timedelta,
        concurrency: int,
        poll_interval: timedelta,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._clock = clock
        self._endpoints = tuple(endpoints)
        self._secrets = tuple(secrets)
        self._timeout = timeout
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._sleep = sleep
        self._http: aiohttp.ClientSession | None = None

    @property
    def _lease(self) -> timedelta:
        # Past the attempt's own timeout, so a live worker always settles first.
        return self._timeout * 2 + timedelta(seconds=5)

    async def run_once(self) -> int:
        """Claim one batch of due deliveries, post them concurrently and settle them.
        How many were attempted; a full batch means more may be due."""
        now = self._clock.now()
        claimed = await self._store.claim(
            self._endpoints, now=now, limit=self._concurrency, lease=self._lease
        )
        if claimed:
            outcomes = await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
            await self._store.settle(outcomes)
        return len(claimed)

    async def _attempt(self, delivery: ClaimedDelivery) -> DeliveryOutcome:
        status, error = await self._post(delivery)
        now = self._clock.now()
        delivered = status is not None and 200 <= status < 300
        if delivered:
            state, next_at, outcome = WebhookDeliveryState.DELIVERED, now, "delivered"
        else:
            delay = retry_delay(delivery.attempts, self._rng)
            if delay is None:
                state, next_at, outcome = WebhookDeliveryState.FAILED, now, "failed"
            else:
                state, next_at, outcome = WebhookDeliveryState.PENDING, now + delay, "retried"
        metrics.WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
        if outcome == "failed":
            _log.warning(
                "webhook delivery failed for good",
                extra={
                    "event": "webhook_delivery_failed",
                    "delivery_id": str(delivery.id),
                    "endpoint": delivery.endpoint,
                    "attempts": delivery.attempts,
                    "reason": error,
                },
            )
        return DeliveryOutcome(
            id=delivery.id,
            attempts=delivery.attempts,
            state=state,
            attempted_at=now,
            next_attempt_at=next_at,
            http_status=status,
            error="" if delivered else error[:_MAX_ERROR],
        )

    async def _post(self, delivery: ClaimedDelivery) -> tuple[int | None, str]:
        """The answer's status (None if none came) and what went wrong, if anything."""
        body = payload_of(delivery)
        msg_id = str(delivery.id)
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(self._secrets, msg_id, timestamp, body),
        }
        try:
            async with self._session().post(
                delivery.endpoint,
                data=body,
                headers=headers,
                # A redirect could lead anywhere: the endpoint is what the operator set.
                allow_redirects=False,
            ) as response:
                status = response.status
        except TimeoutError:
            return None, f"no answer within {self._timeout.total_seconds():g}s"
        except aiohttp.ClientError as exc:
            return None, str(exc) or type(exc).__name__
        return status, "" if 200 <= status < 300 else f"HTTP {status}"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout.total_seconds()),
                # The endpoint's answer is a status; its cookies mean nothing here.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    async def run(self) -> None:
        """Deliver until cancelled: at once while batches come full, else every poll
        interval. A failed pass (a database outage, or a bug) is logged and the next one
        runs on time."""
        wiring_checked = False
        while True:
            attempted = 0
            try:
                if not wiring_checked:
                    await self._check_wiring()
                    wiring_checked = True
                attempted = await self.run_once()
                if attempted < self._concurrency:
                    backlog = await self._store.backlog(at_most=_BACKLOG_COUNTED)
                    metrics.WEBHOOK_OUTBOX_BACKLOG.set(backlog)
            except DatabaseUnavailable as exc:
                _log.warning(
                    "webhook delivery skipped: %s", exc, extra={"event": "webhook_pass_skipped"}
                )
            except Exception:
                _log.exception("webhook delivery failed", extra={"event": "webhook_pass_failed"})
            if attempted < self._concurrency:
                await self._sleep(self._poll_interval.total_seconds())

    async def _check_wiring(self) -> None:
        """Say so if the pool's connections write no events for an endpoint this worker
        posts to (a pool made without `outbox_settings`): it would wait for ever."""
        missing = sorted(set(self._endpoints) - set(await self._store.outbox_endpoints()))
        if missing:
            _log.error(
                "webhooks configured, but the database connections write no events for %d "
                "of the endpoints: the pool was made without the outbox settings",
                len(missing),
                extra={"event": "webhook_outbox_unwired"},
            )

    async def aclose(self) -> None:
        """Close the HTTP connections; after `run` has been cancelled."""
        if self._http is not None:
            await self._http.close()
            self._http = None
