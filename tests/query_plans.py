"""The plans PostgreSQL chooses for a statement, including the statements inside the
functions it calls (Refresh's rotation is a function: migration 0027).

EXPLAIN shows a function call as one Function Scan; what runs inside is planned when it
runs. So a statement whose plan calls one of the service's own functions is run once more
with auto_explain logging every nested plan to this connection, inside a transaction that
is rolled back: nothing it writes stays.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg

from authsvc.store.pool import Connection, Pool

__all__ = ["plan_nodes", "plans"]

Plan = dict[str, Any]

# Functions in the service's schema (not pg_catalog's), by name.
_OWN_FUNCTIONS = """
SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace
"""
_NESTED_PLANS = (
    "LOAD 'auto_explain'",
    "SET LOCAL auto_explain.log_min_duration = 0",
    "SET LOCAL auto_explain.log_nested_statements = on",
    "SET LOCAL auto_explain.log_format = 'json'",
    "SET LOCAL auto_explain.log_level = 'notice'",
    "SET LOCAL client_min_messages = 'notice'",
)
_PLAN_MARK = "plan:"


def plan_nodes(node: Plan) -> Iterator[Plan]:
    """`node` and every node under it."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def plans(pool: Pool, statement: str, *args: object) -> list[Plan]:
    """The top plan node of `statement` and, if it calls one of the service's functions,
    of every statement run inside them."""
    async with pool.acquire() as conn:
        explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
        top: Plan = json.loads(explained)[0]["Plan"]
        own = {row["proname"] for row in await conn.fetch(_OWN_FUNCTIONS)}
        if not any(n.get("Function Name") in own for n in plan_nodes(top)):
            return [top]
        return [top, *await _nested(conn, statement, args)]


async def _nested(conn: Connection, statement: str, args: tuple[object, ...]) -> list[Plan]:
    logged: list[str] = []

    def listen(_: object, message: asyncpg.PostgresLogMessage) -> None:
        logged.append(message.message)

    conn.add_log_listener(listen)
    transaction = conn.transaction()
    await transaction.start()
    try:
        for setting in _NESTED_PLANS:
            await conn.execute(setting)
        await conn.fetch(statement, *args)
        # asyncpg hands log messages to listeners with call_soon: one turn delivers them.
        await asyncio.sleep(0)
    finally:
        await transaction.rollback()
        conn.remove_log_listener(listen)
    # The outer statement's own plan is among them too: one Function Scan, harmless.
    return [
        json.loads(text.split(_PLAN_MARK, 1)[1])["Plan"] for text in logged if _PLAN_MARK in text
    ]
