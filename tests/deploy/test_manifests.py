"""deploy/: the Kubernetes manifests and the compose file pass their published schemas
(validators from PyPI, offline), every container is locked down and sized, the workload
gets nothing but the proxy, and the Dockerfile keeps build tools out of the image."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
K8S = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
BIN = Path(sys.executable).parent


def documents() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for doc in documents():
        if doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], doc["spec"]))
        elif doc["kind"] in ("Deployment", "Job"):
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return specs


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{name}/{c['name']}", c)
        for name, spec in pod_specs()
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    ]


def test_kubernetes_manifests_pass_the_strict_schema() -> None:
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, K8S)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_passes_the_compose_spec() -> None:
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "deploy" / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "container"), containers(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_container_is_locked_down_and_sized(name: str, container: dict[str, Any]) -> None:
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    if not name.endswith("/egress-lock"):  # the one root step: it only writes iptables rules
        assert "add" not in security["capabilities"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), name


def test_only_the_egress_lock_runs_as_root_and_pods_run_as_non_root() -> None:
    for name, spec in pod_specs():
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            pod_user = spec.get("securityContext", {}).get("runAsUser")
            runs_as = container.get("securityContext", {}).get("runAsUser", pod_user)
            if container["name"] == "egress-lock":
                assert runs_as == 0
            else:
                assert runs_as is not None, f"{name}/{container['name']}"
                assert runs_as >= 10000, f"{name}/{container['name']}"


def test_the_workload_gets_only_the_proxy_url_and_its_sandbox_token() -> None:
    [(_, sandbox)] = [(n, s) for n, s in pod_specs() if n.startswith("sandbox-")]
    [workload] = sandbox["containers"]
    env = {e["name"]: e for e in workload["env"]}
    assert set(env) == {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"}
    assert env["ANTHROPIC_BASE_URL"]["value"] == "http://127.0.0.1:8080"
    assert env["ANTHROPIC_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "sandbox-token"
    assert "envFrom" not in workload
    assert not any(m["name"] == "session" for m in workload.get("volumeMounts", []))
    [lock, proxy] = sandbox["initContainers"]
    assert (lock["name"], proxy["name"], proxy["restartPolicy"]) == (
        "egress-lock",
        "proxy",
        "Always",
    )
    assert workload["securityContext"]["runAsUser"] != proxy["securityContext"]["runAsUser"]
    assert any(a.startswith("--bootstrap-token-file=") for a in proxy["args"])


def test_sandbox_pods_accept_nothing_and_reach_only_what_the_proxy_needs() -> None:
    [policy] = [
        d
        for d in documents()
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "sandbox"
    ]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    ports = sorted(p["port"] for rule in spec["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 8700]  # no Redis: the control plane is the proxy's peer


def test_a_sandbox_pod_holds_no_shared_or_cloud_credential() -> None:
    """The sandbox pod's containers get only their own session's Secret: no Redis, database,
    KMS or AWS setting, and no Secret but the session's."""
    [(_, pod)] = [(name, spec) for name, spec in pod_specs() if name.startswith("sandbox")]
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for env in container.get("env", []):
            name = env["name"]
            assert not name.startswith(("REDIS", "DATABASE", "AWS_", "METRUX_KMS", "METRUX_KEK"))
            assert name != "KEY_ENCRYPTION_KEY"
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref["name"].startswith("metrux-session-")
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"].startswith("metrux-session-")
    assert pod["automountServiceAccountToken"] is False


def test_the_dockerfile_runs_metrux_as_a_non_root_user_without_build_tools() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"(?m)^FROM ", text)[1:]
    runtime = next(s for s in stages if " AS runtime" in s.splitlines()[0])
    assert runtime.splitlines()[0].startswith("python:3.11-slim")
    assert "COPY --from=build /opt/metrux /opt/metrux" in runtime
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runtime)
    assert re.search(r"(?m)^USER 10001:10001$", runtime)
    assert '\nENTRYPOINT ["metrux"]' in runtime
    assert "HEALTHCHECK" in runtime
