"""The TypeScript peer of issue 12: better-auth (`bench/peers/better-auth/`, its own
package.json and lock) on the bench's PostgreSQL, in its own schema, behind a small Node
HTTP server. Its packages are installed here on first use (`npm ci`), never by `make test`.

Seeded like authsvc's scenarios: users and sessions written straight into better-auth's
tables, each session's cookie signed as better-auth signs it (HMAC-SHA256 with the
server's secret), so the load calls `getSession` and `listSessions` on live sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import asyncpg

from bench.servers import ServerProcess, spawn

__all__ = [
    "COOKIE",
    "GET_SESSION",
    "LIST_SESSIONS",
    "SCENARIOS",
    "PeerUnavailable",
    "seed",
    "start",
]

# Scenario -> the authsvc scenario it is set beside (same seeding, same concurrency).
SCENARIOS = {"peer_get_session": "validate", "peer_list_sessions": "list_sessions"}
PEER_DIR = Path(__file__).parent / "peers" / "better-auth"
SCHEMA = "better_auth"
COOKIE = "better-auth.session_token"
GET_SESSION = "/api/auth/get-session"
LIST_SESSIONS = "/api/auth/list-sessions"
# Fixed: bench databases hold no real sessions, and a kept database stays usable.
_SECRET = "bench-better-auth-secret-0123456789abcdef"
_LIFETIME = timedelta(days=7)
_STAMP = PEER_DIR / "node_modules" / ".bench-stamp"
_SERVER_POOL_MAX = 10  # authsvc's default AUTHSVC_DB_POOL_MAX_SIZE


class PeerUnavailable(RuntimeError):
    """The peer cannot run here (no Node or npm, or its packages do not install)."""


def _install() -> None:
    """`npm ci` when package-lock.json changed since the last install."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise PeerUnavailable("the better-auth peer needs node and npm on PATH")
    want = hashlib.sha256((PEER_DIR / "package-lock.json").read_bytes()).hexdigest()
    if _STAMP.is_file() and _STAMP.read_text().strip() == want:
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],  # noqa: S607
        cwd=PEER_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise PeerUnavailable(f"npm ci in {PEER_DIR} failed:\n{done.stdout}{done.stderr}")
    _STAMP.write_text(want + "\n")


def _env(dsn: str) -> dict[str, str]:
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PEER_DATABASE_URL": dsn,
        "PEER_SCHEMA": SCHEMA,
        "PEER_SECRET": _SECRET,
        "PEER_POOL_MAX": str(_SERVER_POOL_MAX),
    }
    # The embedded database names a pgpass file rather than a password; pg reads one
    # only through a deprecated path, and PGPASSWORD always.
    passfile = parse_qs(urlsplit(dsn).query).get("passfile")
    if passfile:
        env["PGPASSWORD"] = Path(passfile[0]).read_text().strip().rsplit(":", 1)[1]
    return env


def start(dsn: str, work_dir: Path, cpus: Sequence[int] = ()) -> ServerProcess:
    """Install if needed, create better-auth's tables, and serve."""
    _install()
    env = _env(dsn)
    migrated = subprocess.run(
        ["node", "server.mjs", "migrate"],  # noqa: S607
        cwd=PEER_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if migrated.returncode != 0:
        raise PeerUnavailable(f"better-auth migrate failed:\n{migrated.stderr}")
    argv = ["node", "server.mjs", "serve"]
    if cpus:
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    return spawn("better-auth peer", argv, env, work_dir / "better-auth.log", cwd=PEER_DIR)


def _cookie(token: str) -> str:
    """The session cookie better-auth sets: `token.signature`, URL-encoded as
    encodeURIComponent does (better-call's signCookieValue)."""
    digest = hmac.new(_SECRET.encode(), token.encode(), hashlib.sha256).digest()
    return quote(f"{token}.{base64.b64encode(digest).decode()}", safe="-_.!~*'()")


async def seed(pool: asyncpg.Pool, users: int, sessions_each: int) -> list[list[str]]:
    """`users` new users, each with `sessions_each` live sessions: their cookies."""
    now = datetime.now(UTC)
    user_rows, session_rows, cookies = [], [], []
    for _ in range(users):
        user_id = secrets.token_hex(16)
        user_rows.append(
            (user_id, "bench", f"bench-{uuid.uuid4().hex}@example.com", True, now, now)
        )
        mine = []
        for _ in range(sessions_each):
            token = secrets.token_urlsafe(24)
            session_rows.append(
                (secrets.token_hex(16), now + _LIFETIME, token, now, now, "127.0.0.1",
                 "bench/1.0", user_id)
            )  # fmt: skip
            mine.append(_cookie(token))
        cookies.append(mine)
    async with pool.acquire() as conn, conn.transaction():
        await conn.copy_records_to_table(
            "user",
            schema_name=SCHEMA,
            records=user_rows,
            columns=("id", "name", "email", "emailVerified", "createdAt", "updatedAt"),
        )
        await conn.copy_records_to_table(
            "session",
            schema_name=SCHEMA,
            records=session_rows,
            columns=("id", "expiresAt", "token", "createdAt", "updatedAt", "ipAddress",
                     "userAgent", "userId"),
        )  # fmt: skip
    return cookies
