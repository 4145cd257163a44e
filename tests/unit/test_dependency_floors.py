"""The lowest versions pyproject.toml allows can import the generated stubs.

Generated code refuses older runtimes at import (gencode 7.35.1 needs protobuf >= 7.35.1;
grpcio checks GRPC_GENERATED_VERSION), so a floor below them lets pip install a client
that fails on `import`. Regenerating with newer tools must raise the floors with them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "authsvc": (ROOT / "pyproject.toml", ROOT / "authsvc" / "v1"),
    "authsvc-client": (
        ROOT / "clients" / "python" / "pyproject.toml",
        ROOT / "clients" / "python" / "src" / "authsvc_client" / "v1",
    ),
}


def _floor(pyproject: Path, name: str) -> Version:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == name:
            [floor] = [spec.version for spec in requirement.specifier if spec.operator == ">="]
            return Version(floor)
    raise AssertionError(f"{pyproject} does not depend on {name}")


def _protobuf_gencode(stubs: Path) -> Version:
    found = re.search(
        r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*"
        r"(\d+),\s*(\d+),\s*(\d+),",
        (stubs / "auth_service_pb2.py").read_text(encoding="utf-8"),
    )
    assert found is not None
    return Version(".".join(found.groups()))


def _grpc_gencode(stubs: Path) -> Version:
    found = re.search(
        r"GRPC_GENERATED_VERSION = '([^']+)'",
        (stubs / "auth_service_pb2_grpc.py").read_text(encoding="utf-8"),
    )
    assert found is not None
    return Version(found.group(1))


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_protobuf_floor_can_import_the_generated_stubs(package: str) -> None:
    pyproject, stubs = PACKAGES[package]

    assert _floor(pyproject, "protobuf") >= _protobuf_gencode(stubs)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_grpcio_floor_can_import_the_generated_stubs(package: str) -> None:
    pyproject, stubs = PACKAGES[package]

    assert _floor(pyproject, "grpcio") >= _grpc_gencode(stubs)
