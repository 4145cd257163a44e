"""What stands between the service's pool and PostgreSQL (docs/operations.md, Behind PgBouncer)."""

from __future__ import annotations

import enum

__all__ = ["DatabasePooler"]


class DatabasePooler(enum.Enum):
    """The connection pooler `AUTHSVC_DATABASE_URL` goes through."""

    # PostgreSQL itself (or a session-pooling proxy): a connection is one server session.
    NONE = "none"
    # PgBouncer with pool_mode=transaction: consecutive transactions of one connection may
    # run on different server sessions, so nothing may outlive a transaction.
    PGBOUNCER_TRANSACTION = "pgbouncer-transaction"
