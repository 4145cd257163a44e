"""Where Citus runs a statement, from its EXPLAIN: the proof that a hot statement is a router
(single-shard) query, shared by the tests that make that claim.

`explain(conn, sql, *args)` runs `EXPLAIN (VERBOSE, FORMAT JSON)` of the statement on a
connection to the coordinator, with `args` bound as the statement's `$n` parameters the way
the service binds them (so Citus prunes shards by their values, as it does when the service
runs the statement; nothing is executed), and `citus.explain_all_tasks` on, so every task is
listed rather than one of them. The plan's Citus custom scans (the statement's own, and one
per distributed subplan: a CTE, a subquery Citus runs first) each become a `CitusScan`: how
many tasks, on which nodes. What the coordinator does itself to plain tables is listed apart.

Two things Citus 14 cannot EXPLAIN, and what is done instead:
- `EXPLAIN (GENERIC_PLAN)` fails under Citus ("no value found for parameter 1"), and could not
  say which shard anyway: pruning needs the values. Hence the values, bound.
- An INSERT ... SELECT that Citus runs through the coordinator ("pull to coordinator") fails
  to EXPLAIN with bound parameters, the same error (citusdata/citus#4075). That statement is
  explained again with the values written into it as typed literals, which is what Citus does
  with bound values before it plans anyway (its tasks' queries show them so).
Such an INSERT ... SELECT is never single-shard here: which shards its rows go to is decided as
it runs, and EXPLAIN cannot show it (its SELECT is a scan of its own, and may be).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

__all__ = ["CitusScan", "Explained", "explain"]

_ALL_TASKS = "citus.explain_all_tasks"
_NODES = "SELECT nodename, nodeport, groupid FROM pg_dist_node"
# Citus names the coordinator so in the task of work it does on its own tables.
_LOCAL_HOSTNAME = "SELECT current_setting('citus.local_hostname')"
_COORDINATOR_GROUP = 0

# Citus's message when it cannot EXPLAIN a statement with bound parameters.
_UNBOUND = "no value found for parameter"
# A `$n` parameter, or a string, quoted identifier, comment or dollar-quoted body to skip.
_PARAMETER = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|\$([A-Za-z_]\w*|)\$.*?\$\1\$|\$(\d+)""",
    re.DOTALL,
)
_LITERAL = "SELECT quote_nullable($1::{type}) || '::{type}'"
_TYPE_NAME = "SELECT format_type($1, NULL)"
_INSERT_SELECT = "Citus INSERT ... SELECT"

# A plan node, as EXPLAIN's JSON gives it.
_Plan = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CitusScan:
    """One Citus custom scan: the statement's own, or a distributed subplan's."""

    provider: str  # "Citus Adaptive", "Citus INSERT ... SELECT (pull to coordinator)", ...
    task_count: int | None  # None: decided as the statement runs (an INSERT ... SELECT's)
    # "host:port" of each node that runs one of its tasks.
    nodes: frozenset[str]
    on_coordinator: bool  # its every task runs on the coordinator (plain or local tables)
    is_subplan: bool

    @property
    def is_single_shard(self) -> bool:
        return self.task_count == 1 and len(self.nodes) == 1


@dataclass(frozen=True, slots=True)
class Explained:
    """Where a statement runs. `is_single_shard` is the router claim: it reaches at least
    one worker, and every Citus scan (subplans too) has exactly one task on one node.
    Work the coordinator does itself (plain tables) is allowed, and listed."""

    scans: tuple[CitusScan, ...]
    # Tables the coordinator reads or writes itself, outside any Citus scan.
    coordinator_tables: frozenset[str]
    coordinator: frozenset[str]  # the coordinator's "host:port" names
    plan: list[Any]  # the EXPLAIN output, for a failing assertion's message

    @property
    def workers(self) -> frozenset[str]:
        """Every worker a task runs on."""
        return frozenset().union(*(scan.nodes for scan in self.scans)) - self.coordinator

    @property
    def multi_shard_scans(self) -> tuple[CitusScan, ...]:
        """The scans not shown to stay on one shard: several tasks, or decided as it runs."""
        return tuple(scan for scan in self.scans if not scan.is_single_shard)

    @property
    def multi_shard_subplans(self) -> tuple[CitusScan, ...]:
        return tuple(scan for scan in self.multi_shard_scans if scan.is_subplan)

    @property
    def is_single_shard(self) -> bool:
        return bool(self.workers) and not self.multi_shard_scans

    def __str__(self) -> str:
        scans = "; ".join(
            f"{'subplan ' if scan.is_subplan else ''}{scan.provider}: "
            + (
                "tasks decided at run time"
                if scan.task_count is None
                else f"{scan.task_count} task(s) on {', '.join(sorted(scan.nodes)) or 'no node'}"
            )
            for scan in self.scans
        )
        local = ", ".join(sorted(self.coordinator_tables)) or "none"
        return f"{scans or 'no Citus scan'}; coordinator-local tables: {local}"


async def explain(
    conn: asyncpg.Connection, sql: str, *args: object, in_transaction: bool = True
) -> Explained:
    """Where Citus would run `sql` with `args` as its parameters (see the module docstring);
    `conn` is on the coordinator, outside a transaction. The statement is planned, not run.
    `in_transaction`: as sent inside a transaction block, or alone; Citus delegates a call of
    a distributed function to its worker only when it is sent alone."""
    coordinator = await _coordinator_nodes(conn)
    try:
        output = await _explain(conn, sql, args, in_transaction)
    except asyncpg.UndefinedObjectError as error:
        if not args or not str(error).startswith(_UNBOUND):
            raise
        literal = await _with_literals(conn, sql, args)
        output = await _explain(conn, literal, (), in_transaction)
    plan: list[Any] = json.loads(output)
    scans: list[CitusScan] = []
    tables: set[str] = set()
    for statement in plan:
        _walk(statement["Plan"], coordinator, scans, tables, is_subplan=False)
    return Explained(
        scans=tuple(scans),
        coordinator_tables=frozenset(tables),
        coordinator=coordinator,
        plan=plan,
    )


async def _explain(
    conn: asyncpg.Connection, sql: str, args: Sequence[object], in_transaction: bool
) -> str:
    explain = f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}"
    if in_transaction:
        # A transaction of its own: the setting ends with it.
        async with conn.transaction():
            await conn.execute(f"SET LOCAL {_ALL_TASKS} = on")
            output: str = await conn.fetchval(explain, *args)
            return output
    await conn.execute(f"SET {_ALL_TASKS} = on")
    try:
        output = await conn.fetchval(explain, *args)
    finally:
        await conn.execute(f"RESET {_ALL_TASKS}")
    return output


async def _with_literals(conn: asyncpg.Connection, sql: str, args: Sequence[object]) -> str:
    """`sql` with each `$n` replaced by its value as a literal cast to the parameter's type,
    quoted by the server."""
    statement = await conn.prepare(sql)
    literals = []
    for parameter, value in zip(statement.get_parameters(), args, strict=True):
        type_name = await conn.fetchval(_TYPE_NAME, parameter.oid)
        literals.append(await conn.fetchval(_LITERAL.format(type=type_name), value))

    def replace(match: re.Match[str]) -> str:
        number = match.group(2)
        return match.group(0) if number is None else literals[int(number) - 1]

    return _PARAMETER.sub(replace, sql)


async def _coordinator_nodes(conn: asyncpg.Connection) -> frozenset[str]:
    """The coordinator's "host:port" names: as registered, and as Citus names it in tasks
    it runs itself."""
    rows = await conn.fetch(_NODES)
    local_hostname = await conn.fetchval(_LOCAL_HOSTNAME)
    ports = [row["nodeport"] for row in rows if row["groupid"] == _COORDINATOR_GROUP]
    names = {f"{row['nodename']}:{row['nodeport']}" for row in rows if row["nodeport"] in ports}
    return frozenset(names | {f"{local_hostname}:{port}" for port in ports})


def _walk(
    node: _Plan,
    coordinator: frozenset[str],
    scans: list[CitusScan],
    tables: set[str],
    *,
    is_subplan: bool,
) -> None:
    """Collect the Citus scans under `node`, and the tables the coordinator's own plan
    nodes touch. Workers' plans ("Remote Plan") are not descended into: they only ever hold
    one shard's plain scans."""
    distributed = node.get("Distributed Query")
    if distributed is not None:
        for subplan in distributed.get("Subplans", ()):
            for statement in subplan["PlannedStmt"]:
                _walk(statement["Plan"], coordinator, scans, tables, is_subplan=True)
        for job in _jobs(distributed.get("Job")):
            nodes = frozenset(_node_name(task["Node"]) for task in job.get("Tasks", ()))
            scans.append(
                CitusScan(
                    provider=str(node.get("Custom Plan Provider", node["Node Type"])),
                    task_count=int(job["Task Count"]),
                    nodes=nodes,
                    on_coordinator=bool(nodes) and nodes <= coordinator,
                    is_subplan=is_subplan,
                )
            )
    elif node.get("Custom Plan Provider") == _INSERT_SELECT:
        method = node.get("INSERT/SELECT method", "")
        scans.append(
            CitusScan(
                provider=f"{_INSERT_SELECT} ({method})",
                task_count=None,
                nodes=frozenset(),
                on_coordinator=False,
                is_subplan=is_subplan,
            )
        )
        for statement in node.get("Select Query", ()):
            _walk(statement["Plan"], coordinator, scans, tables, is_subplan=True)
    elif "Relation Name" in node:
        tables.add(node["Relation Name"])
    for child in node.get("Plans", ()):
        _walk(child, coordinator, scans, tables, is_subplan=is_subplan)


def _jobs(job: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """A job and the jobs it waits for (a repartition join's)."""
    if job is None:
        return
    yield job
    for dependent in job.get("Dependent Jobs", ()):
        yield from _jobs(dependent)


def _node_name(conninfo: str) -> str:
    """`host=10.0.0.1 port=5432 dbname=x` -> `10.0.0.1:5432`."""
    fields = dict(part.split("=", 1) for part in conninfo.split())
    return f"{fields['host']}:{fields['port']}"
