"""GetSessionLineage: a session's refresh history for an operator, bounded and audited
(docs/operations.md, "Refresh lineage"). The steps are recorded by SessionService.refresh."""

from __future__ import annotations

from typing import Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import SessionNotFound
from authsvc.core.lineage import SessionLineage
from authsvc.core.models import AuditEvent, Operator, SessionEnd, SessionId
from authsvc.domain.admin import AdminEvent, admin_event
from authsvc.domain.tombstones import end_of

__all__ = ["MAX_LINEAGE_STEPS", "LineageStore", "SessionLineages"]

# A session refreshing every minute for 30 days has ~43,000 steps: an answer shows the
# newest this many (about 200 kB), and the reuse pair whatever its age.
MAX_LINEAGE_STEPS = 1000


class LineageStore(Protocol):
    async def read_lineage(
        self, session_id: SessionId, *, limit: int, event: AuditEvent
    ) -> SessionLineage | None:
        """The session, live or ended, with its newest `limit` steps oldest first
        (`truncated` if there were more), the id of its first token, and the reuse pair if
        reuse ended it; None if there is no such session (never was, or swept). Records
        `event` in the same transaction, its detail with `found` and `step_count`.
        DatabaseUnavailable if the database cannot be reached in time; then nothing is
        recorded."""
        ...


class SessionLineages:
    """AdminService.GetSessionLineage's use case."""

    def __init__(
        self, *, store: LineageStore, clock: Clock, max_steps: int = MAX_LINEAGE_STEPS
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_steps = max_steps

    async def get_session_lineage(
        self, operator: Operator, session_id: SessionId
    ) -> tuple[SessionLineage, SessionEnd | None]:
        """The session's refresh lineage, with how the session ended (None while live).
        SessionNotFound if there is no such session; the read is audited either way (it
        shows the user's addresses)."""
        now = self._clock.now()
        lineage = await self._store.read_lineage(
            session_id,
            limit=self._max_steps,
            event=admin_event(
                AdminEvent.SESSION_LINEAGE_VIEWED, operator, now, session_id=session_id
            ),
        )
        if lineage is None:
            raise SessionNotFound("no such session")
        return lineage, end_of(lineage.session, now)
