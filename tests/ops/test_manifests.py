"""deploy/kubernetes, parsed: the fields that matter, checked against the image and config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyrotd.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"


def documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), path
            found[document["kind"]] = document
    return found


@pytest.fixture(scope="module")
def kinds() -> dict[str, dict[str, Any]]:
    return documents()


def pod_spec(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = kinds["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(kinds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = pod_spec(kinds)["containers"]
    assert isinstance(only, dict)
    return only


def test_every_resource_is_listed_and_in_one_namespace(kinds: dict[str, dict[str, Any]]) -> None:
    assert set(kinds) == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Kustomization",
    }
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in MANIFESTS.glob("*.yaml") if p.stem != "kustomization"
    )
    namespace = kinds["Namespace"]["metadata"]["name"]
    for kind, document in kinds.items():
        if kind not in {"Namespace", "Kustomization"}:
            assert document["metadata"]["namespace"] == namespace, kind


def test_config_is_valid_aws_storage_and_its_port_is_the_containers(
    kinds: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    text = kinds["ConfigMap"]["data"]["keyrotd.toml"]
    path = tmp_path / "keyrotd.toml"
    path.write_text(text)
    settings = load_settings(str(path), environ={})
    assert settings.storage.type == "aws"
    assert not tomllib.loads(text)["storage"].get("endpoint_url")
    port = int(settings.server.listen.rpartition(":")[2])
    assert settings.server.listen.startswith("0.0.0.0:")
    (http,) = container(kinds)["ports"]
    assert http["containerPort"] == port
    env = {e["name"]: e["value"] for e in container(kinds)["env"]}
    mounts = {m["name"]: m for m in container(kinds)["volumeMounts"]}
    assert env["KEYROTD_CONFIG"] == f"{mounts['config']['mountPath']}/keyrotd.toml"
    volumes = {v["name"]: v for v in pod_spec(kinds)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]


def test_two_replicas_on_irsa_with_a_disruption_budget(kinds: dict[str, dict[str, Any]]) -> None:
    deployment = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 2
    account = kinds["ServiceAccount"]
    assert pod_spec(kinds)["serviceAccountName"] == account["metadata"]["name"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\w+:role/[\w+=,.@-]+", role)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        kinds["Service"]["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_probes_ask_health_and_readiness_on_the_served_port(
    kinds: dict[str, dict[str, Any]],
) -> None:
    box = container(kinds)
    names = {p["name"]: p["containerPort"] for p in box["ports"]}
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = box[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in names or get["port"] in names.values(), probe
    (service_port,) = kinds["Service"]["spec"]["ports"]
    assert service_port["targetPort"] in names


def test_non_root_read_only_and_the_images_user(kinds: dict[str, dict[str, Any]]) -> None:
    containerfile = (ROOT / "config" / "Containerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", containerfile, re.MULTILINE)
    assert user is not None
    pod = pod_spec(kinds)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    box = container(kinds)["securityContext"]
    assert box["readOnlyRootFilesystem"] is True
    assert box["allowPrivilegeEscalation"] is False
    assert box["capabilities"]["drop"] == ["ALL"]
    assert pod_spec(kinds)["terminationGracePeriodSeconds"] > 5


def test_image_is_keyrotd_at_the_project_version(kinds: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    image = container(kinds)["image"]
    assert image.rpartition("/")[2] == f"keyrotd:{version}", image
    assert container(kinds)["args"] == ["run"]
