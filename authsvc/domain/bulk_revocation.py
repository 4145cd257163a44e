"""AdminService.RevokeSessions: end every live session a filter selects ("this signing key
leaked", "this address range", "this user agent"), or, as a dry run, count and show them.

The real run ends its matches in short batches, each its own transaction, one after
another until one comes back short: each batch holds the revocation log's lock (every
ending takes it, migration 0014) only from its ending statement to its commit, so a
Logout or a reuse detection elsewhere waits at most about one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import InvalidArgument
from authsvc.core.models import AuditEvent, EndedSession, Operator, SessionEndReason, SessionId
from authsvc.core.session_filters import SampledSession, SessionFilter
from authsvc.domain import validation
from authsvc.domain.admin import AdminEvent, admin_event, admin_reason
from authsvc.domain.sessions import SessionService

__all__ = [
    "BATCH_SIZE",
    "MAX_FILTER_USER_IDS",
    "SAMPLE_SIZE",
    "BulkRevocation",
    "BulkRevocationStore",
    "Preview",
    "checked_filter",
]

_log = logging.getLogger(__name__)

# Sessions ended per transaction. At 500 a batch commits in tens of milliseconds on the
# 100,000-session test (tests/integration/test_bulk_revocation_load.py prints it).
BATCH_SIZE = 500
# A dry run's sample.
SAMPLE_SIZE = 20
# A filter's user ids: one array parameter, one index probe each.
MAX_FILTER_USER_IDS = 1000
# The longest user-agent text and key id a filter takes.
MAX_USER_AGENT_FILTER = 200
MAX_SIGNING_KEY_ID = 128


class BulkRevocationStore(Protocol):
    """Live sessions by filter. A session matches when it is live at `now` (not ended,
    idle deadline after `now`), was created at or before the run's start, and meets every
    field of the filter. Every method raises DatabaseUnavailable when the database cannot
    be reached in time; then nothing it would have written is written."""

    async def preview(
        self, which: SessionFilter, *, now: datetime, sample_size: int, event: AuditEvent
    ) -> tuple[int, list[SampledSession]]:
        """How many sessions match at `now` (the run's start too), and up to `sample_size`
        of them, most recently active first, from one snapshot; records `event`, its detail
        with `session_count`, in the same transaction. Writes nothing else."""
        ...

    async def end_batch(
        self,
        which: SessionFilter,
        *,
        now: datetime,
        started: datetime,
        after: SessionId | None,
        limit: int,
        revoke_reason: str,
        operator: str,
    ) -> list[EndedSession]:
        """In one transaction: end the first `limit` sessions with an id above `after` (all,
        if None) that still match as they are ended, in id order, at `now` as BULK_REVOKED, ended
        by the operator named `operator`, `revoke_reason` their free text; each goes on the
        revocation feed. Returns them in id order; fewer than `limit` when no more
        matched."""
        ...

    async def record(self, event: AuditEvent, *, session_count: int) -> None:
        """Append `event` to the audit trail, its detail with `session_count`."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """A dry run's answer: the matches now, and a few of them."""

    session_count: int
    sample: list[SampledSession]


def checked_filter(which: SessionFilter) -> SessionFilter:
    """`which` validated and in canonical form: InvalidArgument naming the field
    (`filter.<field>`) otherwise. An empty filter needs `match_all`, so that a request
    that lost its filter on the way does not end every session."""
    if len(which.user_ids) > MAX_FILTER_USER_IDS:
        raise InvalidArgument(
            "filter.user_ids", f"filter.user_ids holds more than {MAX_FILTER_USER_IDS} ids"
        )
    checked = replace(
        which,
        user_ids=tuple(dict.fromkeys(which.user_ids)),
        ip_cidr=_network(which.ip_cidr) if which.ip_cidr else "",
        user_agent_contains=validation.clean_label(
            "filter.user_agent_contains",
            which.user_agent_contains,
            max_length=MAX_USER_AGENT_FILTER,
        ),
        device_types=tuple(dict.fromkeys(which.device_types)),
        signing_key_id=validation.clean_label(
            "filter.signing_key_id", which.signing_key_id, max_length=MAX_SIGNING_KEY_ID
        ),
    )
    if checked.is_empty and not checked.match_all:
        raise InvalidArgument(
            "filter", "the filter is empty: set match_all to select every live session"
        )
    return checked


def _network(text: str) -> str:
    """A CIDR block (host bits allowed and cleared) or a bare address, canonical. No IPv6
    scope (`%eth0`): recorded addresses never carry one, and PostgreSQL takes none."""
    try:
        if "%" in text:
            raise ValueError("an address with a scope")
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError as exc:
        raise InvalidArgument("filter.ip_cidr", "filter.ip_cidr is not a CIDR block") from exc


def described(which: SessionFilter) -> dict[str, object]:
    """The filter as the audit trail keeps it (JSON), only the fields set."""
    fields: dict[str, object] = {}
    if which.user_ids:
        fields["user_ids"] = [str(user_id) for user_id in which.user_ids]
    if which.created_after is not None:
        fields["created_after"] = which.created_after.isoformat()
    if which.created_before is not None:
        fields["created_before"] = which.created_before.isoformat()
    if which.ip_cidr:
        fields["ip_cidr"] = which.ip_cidr
    if which.user_agent_contains:
        fields["user_agent_contains"] = which.user_agent_contains
    if which.device_types:
        fields["device_types"] = [device_type.value for device_type in which.device_types]
    if which.signing_key_id:
        fields["signing_key_id"] = which.signing_key_id
    if which.match_all:
        fields["match_all"] = True
    return fields


class BulkRevocation:
    """The use case behind RevokeSessions. Each call records one audit event
    (`admin_sessions_bulk_revoked`) with the operator, the filter, the reason, whether it
    was a dry run, and the count."""

    def __init__(
        self,
        *,
        store: BulkRevocationStore,
        sessions: SessionService,
        clock: Clock,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._clock = clock
        self._batch_size = batch_size

    async def preview(self, operator: Operator, which: SessionFilter, reason: str) -> Preview:
        """Count the live sessions `which` selects and sample up to SAMPLE_SIZE, most
        recently active first. Changes nothing but the audit trail."""
        which = checked_filter(which)
        reason = admin_reason(reason)
        now = self._clock.now()
        count, sample = await self._store.preview(
            which,
            now=now,
            sample_size=SAMPLE_SIZE,
            event=self._event(operator, which, reason, now, dry_run=True),
        )
        return Preview(session_count=count, sample=sample)

    async def revoke(self, operator: Operator, which: SessionFilter, reason: str) -> int:
        """End every live session `which` selects that existed when the call started
        (BULK_REVOKED, ended by the operator, `reason` their note), batch by batch, each on
        the revocation feed and refused here as soon as its batch commits. Returns how
        many this call ended; a repeat ends none. Cut short (a deadline, a lost
        connection, a database error), the batches committed stay ended, the audit event
        says `interrupted` with the count of those it saw commit (a batch whose commit was
        cut off may be missing), and a repeat finishes the rest."""
        which = checked_filter(which)
        reason = admin_reason(reason)
        started = self._clock.now()
        revoke_reason = f"{SessionEndReason.BULK_REVOKED.value}: {reason}"
        total, after = 0, None
        try:
            while True:
                now = self._clock.now()
                ended = await self._store.end_batch(
                    which,
                    now=now,
                    started=started,
                    after=after,
                    limit=self._batch_size,
                    revoke_reason=revoke_reason,
                    operator=operator.name,
                )
                self._sessions.bulk_ended(ended, SessionEndReason.BULK_REVOKED, now)
                total += len(ended)
                if len(ended) < self._batch_size:
                    break
                after = ended[-1].id
        except BaseException:
            event = self._event(operator, which, reason, self._clock.now(), dry_run=False)
            interrupted = replace(event, detail={**event.detail, "interrupted": True})
            # Shielded: a cancelled call (its deadline) still records what it ended.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.record(interrupted, session_count=total))
            raise
        await self._store.record(
            self._event(operator, which, reason, self._clock.now(), dry_run=False),
            session_count=total,
        )
        _log.info(
            "sessions revoked by filter",
            extra={
                "event": AdminEvent.SESSIONS_BULK_REVOKED.value,
                "operator": operator.name,
                "revoked": total,
            },
        )
        return total

    @staticmethod
    def _event(
        operator: Operator, which: SessionFilter, reason: str, now: datetime, *, dry_run: bool
    ) -> AuditEvent:
        return admin_event(
            AdminEvent.SESSIONS_BULK_REVOKED,
            operator,
            now,
            filter=described(which),
            reason=reason,
            dry_run=dry_run,
        )
