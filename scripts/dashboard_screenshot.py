"""Draw docs/images/dashboard.png: deploy/grafana/authsvc.json's panels over a real run.

Grafana is not in the package registries our machines reach, so this stands in for a
screenshot: a real `authsvc serve` (2 workers, the embedded PostgreSQL, metrics on), a
real Prometheus (Debian's package, scraping it every 2 s and loading
deploy/prometheus/alerts.yml), a few minutes of mixed traffic from this script, then
every panel's queries run through Prometheus's HTTP API and drawn where the dashboard
puts them, by scripts/dashboard_render.py with matplotlib (in build/dashboard-venv, made
on first use: a dev tool, not a dependency of the project).

Run: .venv/bin/python scripts/dashboard_screenshot.py [--seconds 180] [--out PATH]
Everything it starts is stopped when it ends; its files are in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from authsvc.service_keys import mint_service_key
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "authsvc.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RENDER_VENV = REPO / "build" / "dashboard-venv"
SCRAPE_INTERVAL = "2s"
# What Grafana would put for its variables at this scrape interval.
RATE_INTERVAL = "10s"
PASSWORD = "correct horse battery staple"  # noqa: S105 - throwaway accounts
GRACE = 1.0
USERS = 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_http(url: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own localhost
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def ignore_refusal(call: Any) -> Any:
    """The answer, or None for a refused call: refusals are part of the traffic."""
    try:
        return await call
    except grpc.aio.AioRpcError:
        return None


async def user(stub: Any, email: str, rnd: random.Random, until: float) -> None:
    """Sign in, validate, list, refresh a few times, then log out, revoke, replay an old
    refresh token (reuse) or just leave the session to expire idle."""
    while time.monotonic() < until:
        device = rnd.choice(["Firefox on Linux", "Safari on iPhone", "Chrome on Windows"])
        signed_in = await ignore_refusal(
            stub.Login(pb.LoginRequest(email=email, password=PASSWORD, device_name=device))
        )
        if signed_in is None:
            await asyncio.sleep(1)
            continue
        access, refresh, spent = signed_in.access_token, signed_in.refresh_token, ""
        for _ in range(rnd.randint(1, 4)):
            await ignore_refusal(stub.ValidateToken(pb.ValidateTokenRequest(access_token=access)))
            await ignore_refusal(
                stub.ListSessions(pb.ListSessionsRequest(page_size=10), metadata=bearer(access))
            )
            await asyncio.sleep(rnd.uniform(0.2, 1.5))
            rotated = await ignore_refusal(stub.Refresh(pb.RefreshRequest(refresh_token=refresh)))
            if rotated is not None:
                access, refresh, spent = rotated.access_token, rotated.refresh_token, refresh
        ending = rnd.random()
        if ending < 0.45:
            await ignore_refusal(
                stub.Logout(
                    pb.LogoutRequest(scope=pb.LOGOUT_SCOPE_THIS_SESSION), metadata=bearer(access)
                )
            )
        elif ending < 0.6:
            await ignore_refusal(
                stub.RevokeSession(
                    pb.RevokeSessionRequest(session_id=signed_in.session_id, reason="lost phone"),
                    metadata=bearer(access),
                )
            )
        elif ending < 0.7 and spent:
            await asyncio.sleep(GRACE + 0.5)
            await ignore_refusal(stub.Refresh(pb.RefreshRequest(refresh_token=spent)))
        await asyncio.sleep(rnd.uniform(0.5, 3))


async def attacker(stub: Any, emails: list[str], rnd: random.Random, until: float) -> None:
    """Wrong passwords for real and unknown accounts, and forged refresh tokens."""
    while time.monotonic() < until:
        email = rnd.choice([*emails[:3], f"nobody{rnd.randint(1, 999)}@example.com"])
        await ignore_refusal(stub.Login(pb.LoginRequest(email=email, password="wrong")))  # noqa: S106
        forged = pb.RefreshRequest(refresh_token="forged")  # noqa: S106 - refused on purpose
        await ignore_refusal(stub.Refresh(forged))
        await asyncio.sleep(rnd.uniform(0.1, 0.4))


async def subscriber(stub: Any, key: str, until: float) -> None:
    """A service watching the revocation feed, as a verifier does."""
    call = stub.WatchRevocations(pb.WatchRevocationsRequest(), metadata=bearer(key))
    try:
        async for _ in call:
            if time.monotonic() > until:
                break
    except grpc.aio.AioRpcError:
        pass
    finally:
        call.cancel()


async def traffic(port: int, key: str, seconds: float) -> None:
    """Quiet, then a busy middle third (more users, an attack), then quiet again."""
    rnd = random.Random(13)  # noqa: S311 - traffic, not secrets
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        emails = [f"user{n}@example.com" for n in range(USERS)]
        for email in emails:
            await ignore_refusal(stub.Register(pb.RegisterRequest(email=email, password=PASSWORD)))
        start = time.monotonic()
        third = seconds / 3
        tasks = [asyncio.create_task(subscriber(stub, key, start + seconds)) for _ in range(2)]
        tasks += [
            asyncio.create_task(user(stub, email, rnd, start + seconds)) for email in emails[:8]
        ]
        await asyncio.sleep(third)
        busy = [
            asyncio.create_task(user(stub, email, rnd, start + 2 * third)) for email in emails[8:]
        ]
        busy += [asyncio.create_task(attacker(stub, emails, rnd, start + 2 * third))]
        await asyncio.gather(*busy)
        await asyncio.gather(*tasks)


def query_range(prometheus: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    url = f"{prometheus}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - our own localhost
        body = json.load(answer)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def collect(prometheus: str, start: float, end: float) -> dict[str, Any]:
    """The dashboard with each target's series, its variables replaced as Grafana would."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            target["series"] = query_range(prometheus, expr.replace("$job", "authsvc"), start, end)
    dashboard["window"] = [start, end]
    return dashboard


def render_python() -> Path:
    python = RENDER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RENDER_VENV)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603
            [str(python), "-m", "pip", "install", "--quiet", "matplotlib"], check=True
        )
    return python


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="of traffic")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "dashboard.png")
    args = parser.parse_args()
    prometheus_bin = shutil.which("prometheus")
    if prometheus_bin is None:
        sys.exit("prometheus not found: run make bootstrap (scripts/install_promtool)")
    render = render_python()
    grpc_port, http_port, prometheus_port = free_port(), free_port(), free_port()
    key, entry = mint_service_key("dashboard")
    with tempfile.TemporaryDirectory(prefix="authsvc-dashboard-") as work:
        workdir = Path(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
        env.update(
            AUTHSVC_DATA_DIR=str(workdir / "data"),
            AUTHSVC_PORT=str(grpc_port),
            AUTHSVC_HTTP_PORT=str(http_port),
            AUTHSVC_HOST="127.0.0.1",
            AUTHSVC_HTTP_HOST="127.0.0.1",
            AUTHSVC_WORKERS="2",
            AUTHSVC_METRICS="true",
            AUTHSVC_METRICS_SAMPLE_INTERVAL="5s",
            AUTHSVC_SERVICE_KEYS=entry,
            AUTHSVC_SESSION_IDLE_TIMEOUT="40s",
            AUTHSVC_SWEEP_INTERVAL="5s",
            AUTHSVC_REFRESH_GRACE_PERIOD=f"{GRACE:g}s",
            AUTHSVC_SIGN_UPS_PER_IP="100000",
            # Light hashing: two shared cores.
            AUTHSVC_ARGON2_TIME_COST="1",
            AUTHSVC_ARGON2_MEMORY_KIB="8192",
            AUTHSVC_LOG_LEVEL="WARNING",
        )
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": SCRAPE_INTERVAL,
                        "evaluation_interval": SCRAPE_INTERVAL,
                    },
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "authsvc",
                            "static_configs": [{"targets": [f"127.0.0.1:{http_port}"]}],
                        }
                    ],
                }
            )
        )
        server_log = (workdir / "authsvc.log").open("wb")
        prometheus_log = (workdir / "prometheus.log").open("wb")
        server = subprocess.Popen(  # noqa: S603
            [str(REPO / ".venv" / "bin" / "authsvc"), "serve"],
            env=env,
            stdout=server_log,
            stderr=server_log,
        )
        prometheus = subprocess.Popen(  # noqa: S603
            [
                prometheus_bin,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=prometheus_log,
            stderr=prometheus_log,
        )
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        try:
            wait_http(f"http://127.0.0.1:{http_port}/metrics")
            wait_http(f"{prometheus_url}/-/ready")
            start = time.time()
            asyncio.run(traffic(grpc_port, key, args.seconds))
            time.sleep(20)  # the sampler's and the sweeper's next passes, scraped
            end = time.time()
            data = workdir / "panels.json"
            data.write_text(json.dumps(collect(prometheus_url, start - 10, end)))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(  # noqa: S603
                [
                    str(render),
                    str(REPO / "scripts" / "dashboard_render.py"),
                    str(data),
                    str(args.out),
                ],
                check=True,
            )
            print(f"wrote {args.out}")
        except BaseException:
            server_log.flush()
            print((workdir / "authsvc.log").read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            stop(prometheus)
            stop(server)


if __name__ == "__main__":
    main()
