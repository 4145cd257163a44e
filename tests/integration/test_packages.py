"""The release artifacts, used as a team adopting the service would use them.

`scripts/dist` (what `make dist` runs) builds them into a temporary directory; the server's
and the Python client's wheels go into a fresh virtualenv, the Node tarball into a fresh npm
project, both outside the checkout, and each installed client calls the installed server.

Cost, on the 2-core machine: the build about 30 s (tsc most of it), pip about 20 s (it
fetches the runtime dependencies, pinned by constraints.txt, as a user's install would),
npm about 5 s (from npm's cache, filled by `make bootstrap`), and a server start per test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.processes import REPO_ROOT, WAIT, server_group

VERSION = (REPO_ROOT / "authsvc" / "VERSION").read_text().strip()
# Bounds one build or install step: only a hang reaches it, not a timing assertion.
INSTALL_WAIT = 600.0


def _run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a build or install step to its end; its output is the failure message."""
    result = subprocess.run(  # noqa: S603 (our own tools, fixed arguments)
        [str(arg) for arg in argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=INSTALL_WAIT,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout}"
    return result.stdout


async def _output(*argv: str | Path, cwd: Path, env: dict[str, str]) -> str:
    """Run a client program to its end, while the event loop keeps draining the server."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(WAIT):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{' '.join(map(str, argv))}:\n{out.decode()}{err.decode()}"
    return out.decode()


def _outside_env() -> dict[str, str]:
    """This environment without anything that would let the checkout's code be imported."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "NODE_PATH"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AUTHSVC_")}


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the checkout to run the installed code in."""
    path = tmp_path_factory.mktemp("outside")
    assert not path.resolve().is_relative_to(REPO_ROOT)
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(REPO_ROOT / "scripts" / "dist", out, cwd=REPO_ROOT)
    return out


@pytest.fixture(scope="module")
def venv(artifacts: Path, outside: Path) -> Path:
    """A fresh virtualenv holding the server and client wheels and what they depend on."""
    venv = outside / "venv"
    # Without its own pip: this one installs into it (pip --python), which is faster.
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=outside)
    _run(
        *(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install"),
        *("--disable-pip-version-check", "--quiet", "--constraint", REPO_ROOT / "constraints.txt"),
        artifacts / f"authsvc-{VERSION}-py3-none-any.whl",
        artifacts / f"authsvc_client-{VERSION}-py3-none-any.whl",
        cwd=outside,
        env=_outside_env(),
    )
    return venv


@pytest.fixture(scope="module")
def npm_project(artifacts: Path, outside: Path) -> Path:
    """A fresh npm project that installed the Node tarball, and nothing else."""
    project = outside / "node-project"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "adopter", "private": True, "type": "module"})
    )
    _run(
        "npm",
        "install",
        "--prefer-offline",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        artifacts / f"authsvc-client-{VERSION}.tgz",
        cwd=project,
        env=_outside_env(),
    )
    return project


def _sources(directory: str) -> set[str]:
    """The files git sees under `directory` (committed or not, but not ignored), named from
    its parent, as a package's files are named in its archive."""
    listed = _run(
        "git",
        "ls-files",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        directory,
        cwd=REPO_ROOT,
    ).split()
    parent = Path(directory).parent
    return {str(Path(name).relative_to(parent)) for name in listed if (REPO_ROOT / name).exists()}


@pytest.mark.parametrize(
    ("wheel", "package"),
    [
        (f"authsvc-{VERSION}-py3-none-any.whl", "authsvc"),
        (f"authsvc_client-{VERSION}-py3-none-any.whl", "clients/python/src/authsvc_client"),
    ],
)
def test_wheel_ships_every_file_of_its_package(artifacts: Path, wheel: str, package: str) -> None:
    # Migrations, generated v1 code and .pyi stubs, py.typed, VERSION: all of it, nothing else.
    with zipfile.ZipFile(artifacts / wheel) as archive:
        shipped = {name for name in archive.namelist() if ".dist-info/" not in name}

    assert shipped == _sources(package)


def test_node_tarball_ships_javascript_and_declarations_for_every_module(artifacts: Path) -> None:
    sources = _sources("clients/node/src")
    with tarfile.open(artifacts / f"authsvc-client-{VERSION}.tgz") as archive:
        shipped = set(archive.getnames())
    expected = {"package/package.json", "package/README.md"}
    for source in sources:
        module = source.removeprefix("src/").removesuffix(".ts")
        expected |= {f"package/dist/{module}.js", f"package/dist/{module}.d.ts"}

    assert shipped == expected


def test_installed_wheels_report_the_declared_version(venv: Path, outside: Path) -> None:
    # The server's metadata (what pip and `authsvc --version` report) and both packages'.
    script = (
        "import importlib.metadata as m, authsvc, authsvc_client;"
        "print(authsvc.__file__);"
        "print(m.version('authsvc'), m.version('authsvc-client'),"
        " authsvc.__version__, authsvc_client.__version__)"
    )
    printed = _run(venv / "bin" / "python", "-c", script, cwd=outside, env=_outside_env())

    module, versions = printed.splitlines()
    assert Path(module).is_relative_to(venv)
    assert versions.split() == [VERSION] * 4


def test_installed_server_without_the_embedded_extra_refuses_to_serve_without_a_database_url(
    venv: Path, outside: Path
) -> None:
    # The wheel alone, as the container image installs it: no embedded PostgreSQL in it.
    data_dir = outside / "refused-data"
    run = subprocess.run(  # noqa: S603 (the installed console script, fixed arguments)
        [venv / "bin" / "authsvc", "serve"],
        cwd=outside,
        env={**_outside_env(), "AUTHSVC_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )

    assert run.returncode == 2, run.stderr
    assert "the embedded PostgreSQL is not installed" in run.stderr
    assert "authsvc[embedded]" in run.stderr
    assert not data_dir.exists()


@pytest.mark.asyncio
async def test_installed_python_client_calls_installed_server(
    pg_dsn: str, venv: Path, outside: Path
) -> None:
    client = (
        "import sys\n"
        "import authsvc_client\n"
        "with authsvc_client.SyncAuthClient(sys.argv[1]) as client:\n"
        "    client.register('wheel@example.com', 'correct horse battery', display_name='W')\n"
        "    page = client.list_sessions()\n"
        "print(authsvc_client.__file__)\n"
        "print([session.is_current for session in page.sessions])\n"
    )
    python = venv / "bin" / "python"
    async with server_group(python=python, cwd=outside) as group:
        server = await group.start_ready(pg_dsn)
        # The console script the wheel installs, against the server it started.
        health = await _output(
            venv / "bin" / "authsvc",
            "healthcheck",
            cwd=outside,
            env={**_outside_env(), "AUTHSVC_HOST": "127.0.0.1", "AUTHSVC_PORT": str(server.port)},
        )
        printed = await _output(
            python, "-c", client, f"127.0.0.1:{server.port}", cwd=outside, env=_outside_env()
        )

    module, sessions = printed.splitlines()
    assert Path(module).is_relative_to(venv)
    assert sessions == "[True]"
    assert health == "SERVING\n"


@pytest.mark.asyncio
async def test_node_tarball_calls_server_without_typescript(
    pg_dsn: str, venv: Path, outside: Path, npm_project: Path
) -> None:
    script = npm_project / "call.mjs"
    script.write_text(
        'import { AuthClient, VERSION } from "@authsvc/client";\n'
        "const client = new AuthClient({ baseUrl: process.argv[2] });\n"
        "await client.register({\n"
        '  email: "tarball@example.com", password: "correct horse battery", displayName: "T",\n'
        "});\n"
        "const page = await client.listSessions();\n"
        "client.close();\n"
        "console.log(JSON.stringify({ VERSION, current: page.sessions.map((s) => s.current) }));\n"
    )
    async with server_group(python=venv / "bin" / "python", cwd=outside) as group:
        server = await group.start_ready(pg_dsn)
        printed = await _output(
            "node", script, f"http://127.0.0.1:{server.port}", cwd=npm_project, env=_outside_env()
        )

    assert json.loads(printed) == {"VERSION": VERSION, "current": [True]}
    # Its runtime dependencies only (package.json's): no TypeScript, no @types.
    manifest = json.loads((REPO_ROOT / "clients" / "node" / "package.json").read_text())
    runtime = {name.split("/")[0] for name in ["@authsvc/client", *manifest["dependencies"]]}
    installed = (npm_project / "node_modules").iterdir()
    assert sorted(p.name for p in installed if not p.name.startswith(".")) == sorted(runtime)
