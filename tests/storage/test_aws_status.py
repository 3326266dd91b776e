"""``keyrotd status`` on AWS notes the keysets stored under the prefix that the configuration no
longer lists (``ListSecrets`` with the prefix), as it does on the file store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.support.moto import REGION

pytestmark = pytest.mark.usefixtures("aws_environment")


def write_config(path: Path, moto_url: str, prefix: str, keysets: list[str]) -> None:
    storage = (
        f'[storage]\ntype = "aws"\nsecret_prefix = "{prefix}"\nregion = "{REGION}"\n'
        f'endpoint_url = "{moto_url}"\n'
    )
    path.write_text(storage + "".join(f'[[keysets]]\nname = "{k}"\n' for k in keysets))


def test_status_notes_a_stored_keyset_no_longer_configured(
    tmp_path: Path, moto_url: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "keyrotd.toml"
    write_config(config, moto_url, prefix, ["alpha", "beta", "gamma"])
    for name in ("alpha", "beta", "gamma"):
        assert main(["--config", str(config), "rotate", "--keyset", name]) == 0
    write_config(config, moto_url, prefix, ["alpha"])
    capsys.readouterr()

    assert main(["--config", str(config), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unconfigured"] == ["beta", "gamma"]
    assert [keyset["name"] for keyset in report["keysets"]] == ["alpha"]

    assert main(["--config", str(config), "status"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("note: storage also holds keysets beta, gamma, which the configuration")

    assert main(["--config", str(config), "status", "--keyset", "alpha", "--json"]) == 0
    assert "unconfigured" not in json.loads(capsys.readouterr().out)  # asked about one keyset
