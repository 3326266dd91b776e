"""deploy/kubernetes/apiserver-signer: the kube-apiserver static pod with keyrotd beside it, parsed,
and its keyrotd.toml checked by ``keyrotd check-config`` (docs/kubernetes.md)."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyrotd.durations import parse_duration
from tests.test_preflight import clean_environment, run_cli

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "kubernetes" / "apiserver-signer"


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    document = yaml.safe_load((HERE / "kube-apiserver.yaml").read_text())
    assert document["kind"] == "Pod"
    return dict(document["spec"])


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return tomllib.loads((HERE / "keyrotd.toml").read_text())


def _flags(pod: dict[str, Any]) -> dict[str, str]:
    (apiserver,) = pod["containers"]
    return dict(a.split("=", 1) for a in apiserver["command"][1:])


def _mounted(container: dict[str, Any], pod: dict[str, Any], path: str) -> str:
    """The volume ``container`` has at the directory holding ``path``."""
    parent = str(Path(path).parent)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == parent]
    return str(mount["name"])


def test_the_api_server_signs_through_the_socket_keyrotd_serves(
    pod: dict[str, Any], config: dict[str, Any]
) -> None:
    flags = _flags(pod)
    socket = config["kubernetes"]["signer_socket"]
    assert flags["--service-account-signing-endpoint"] == socket
    assert flags["--service-account-issuer"].startswith("https://")
    assert "--service-account-key-file" not in flags
    assert "--service-account-signing-key-file" not in flags
    (keyrotd,) = pod["initContainers"]
    assert keyrotd["restartPolicy"] == "Always"  # a sidecar that starts before the API server
    (apiserver,) = pod["containers"]
    shared = _mounted(apiserver, pod, socket)
    assert _mounted(keyrotd, pod, socket) == shared
    (volume,) = [v for v in pod["volumes"] if v["name"] == shared]
    assert "emptyDir" in volume
    assert keyrotd["args"][:1] == ["run"]
    config_path = keyrotd["args"][keyrotd["args"].index("--config") + 1]
    assert _mounted(keyrotd, pod, config_path) == "keyrotd-config"
    probe = keyrotd["startupProbe"]["httpGet"]
    assert f"{probe['host']}:{probe['port']}" == config["server"]["listen"]
    assert probe["path"] == "/readyz"


def test_no_token_outlives_the_keysets_token_lifetime(
    pod: dict[str, Any], config: dict[str, Any]
) -> None:
    flags = _flags(pod)
    (keyset,) = [k for k in config["keysets"] if k["name"] == config["kubernetes"]["signer_keyset"]]
    lifetime = parse_duration(keyset["token_lifetime"])
    assert parse_duration(flags["--service-account-max-token-expiration"]) <= lifetime
    assert flags["--service-account-extend-token-expiration"] == "false"
    assert lifetime >= timedelta(seconds=600)


def test_check_config_accepts_the_shipped_configuration(tmp_path: Path) -> None:
    env = clean_environment(tmp_path) | {
        "KEYROTD_STORAGE__PATH": str(tmp_path / "data"),
        "KEYROTD_KUBERNETES__SIGNER_SOCKET": str(tmp_path / "signer.sock"),
    }
    code, _, err = run_cli("check-config", "--config", str(HERE / "keyrotd.toml"), env=env)
    assert code == 0, err
