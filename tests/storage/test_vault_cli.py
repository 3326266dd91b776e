"""The CLI on the vault storage type: ``check-config`` validates its settings and files without
the server, ``status`` says where each keyset lives, ``rotate`` writes through KV
(docs/storage.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.support.openbao import BaoServer


def write_config(path: Path, storage: dict[str, str], keysets: tuple[str, ...] = ("main",)) -> Path:
    lines = ["[storage]", 'type = "vault"', *(f'{k} = "{v}"' for k, v in storage.items())]
    lines += [f'[[keysets]]\nname = "{name}"\nalgorithm = "ES256"' for name in keysets]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_status_names_the_secret_and_server(
    tmp_path: Path, bao_dev: BaoServer, vault_token_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}/"
    config = write_config(
        tmp_path / "keyrotd.toml",
        {"url": bao_dev.url, "path_prefix": prefix, "token_file": str(vault_token_file)},
        ("main", "other"),
    )
    assert main(["--config", str(config), "rotate", "--keyset", "main"]) == 0
    assert main(["--config", str(config), "rotate", "--keyset", "other"]) == 0
    write_config(
        config,
        {"url": bao_dev.url, "path_prefix": prefix, "token_file": str(vault_token_file)},
    )
    capsys.readouterr()

    assert main(["--config", str(config), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    where = f"Vault secret secret/{prefix}main at {bao_dev.url}"
    assert [keyset["location"] for keyset in report["keysets"]] == [where]
    assert report["unconfigured"] == ["other"]
    assert bao_dev.root_token not in json.dumps(report)


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ({"url": "http://10.0.0.5:8200"}, "storage.url = 'http://10.0.0.5:8200' would send"),
        ({"url": ""}, "storage.url is not set"),
        ({"auth": "ldap"}, 'storage.auth: "ldap" is not allowed'),
        ({"auth": "approle"}, 'storage.auth = "approle" needs storage.role_id_file'),
        ({"kubernetes_role": "keyrotd"}, 'storage.kubernetes_role is a setting of auth = "k'),
        ({"ca_file": "missing-ca.pem"}, "storage.ca_file"),
        ({"token_file": "nowhere.token"}, "storage.token_file"),
        ({"token_file": "open.token"}, "is accessible to other users (mode 644)"),
    ],
)
def test_check_config_refuses_bad_vault_settings(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    storage: dict[str, str],
    expected: str,
) -> None:
    token = tmp_path / "vault.token"
    token.write_text("s.placeholder-token-value\n")
    token.chmod(0o600)
    (tmp_path / "open.token").write_text("s.placeholder-token-value\n")
    (tmp_path / "open.token").chmod(0o644)
    values = {"url": "https://vault.example:8200", "token_file": str(token)} | storage
    if values.get("auth") == "approle":
        del values["token_file"]
    config = write_config(tmp_path / "keyrotd.toml", values)

    assert main(["--config", str(config), "check-config"]) == 2

    err = capsys.readouterr().err
    assert expected in err
    assert "placeholder-token-value" not in err
    assert len(err.strip().splitlines()) <= 2


def test_check_config_passes_a_good_vault_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "vault.token"
    token.write_text("s.placeholder-token-value\n")
    token.chmod(0o600)
    values = {"url": "https://vault.example:8200", "token_file": "vault.token"}
    config = write_config(tmp_path / "keyrotd.toml", values)

    assert main(["--config", str(config), "check-config"]) == 0


def test_a_setting_of_the_vault_type_is_refused_beside_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text('[storage]\ntype = "file"\nurl = "https://vault.example:8200"\n')

    assert main(["--config", str(config), "check-config"]) == 2
    assert 'url is a setting of storage type "vault"' in capsys.readouterr().err
