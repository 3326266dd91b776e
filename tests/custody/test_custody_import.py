"""``keyrotd import`` into a PKCS#11 custody keyset: a private key would have existed outside
custody, so it is refused (exit 1, naming the custody); a public key ``--as retired`` is published
for verification and the token is left alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.custody import close_all, open_custody
from tests.support.softhsm import SoftHsm


@pytest.fixture
def config(softhsm: SoftHsm, tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        + softhsm.custody_toml(tmp_path)
        + '[[keysets]]\nname = "api"\nalgorithm = "ES256"\ncustody = "pkcs11"\n'
        'rotation_period = "1h"\npublish_ahead = "1h"\n'
    )
    yield config
    close_all()


def _pem(tmp_path: Path, private: bool) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / ("private.pem" if private else "public.pem")
    if private:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    else:
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return path


def _document(config: Path) -> list[dict[str, object]]:
    import base64

    envelope = json.loads((config.parent / "data" / "api.json").read_text())
    keys: list[dict[str, object]] = json.loads(base64.b64decode(envelope["payload"]))["keys"]
    return keys


def _in_token(config: Path) -> set[str]:
    return {k.kid for k in open_custody(load_settings(config, {}), "pkcs11").held("api")}


@pytest.mark.parametrize("as_state", [["--as", "active"], ["--as", "retired", "--until", "30d"]])
def test_a_private_key_import_into_a_custody_keyset_is_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], as_state: list[str]
) -> None:
    assert main(["--config", str(config), "rotate"]) == 0
    before = _document(config)
    held = _in_token(config)
    capsys.readouterr()
    code = main(["--config", str(config), "import", str(_pem(tmp_path, True)), *as_state])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert "keyset api keeps its keys in pkcs11 custody" in err
    assert "--as retired" in err
    assert _document(config) == before
    assert _in_token(config) == held


def test_a_public_key_as_retired_is_published_and_the_token_left_alone(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "rotate"]) == 0
    held = _in_token(config)
    public = _pem(tmp_path, False)
    capsys.readouterr()
    assert (
        main(["--config", str(config), "import", str(public), "--as", "retired", "--until", "30d"])
        == 0
    )
    out, err = capsys.readouterr()
    assert "imported" in out and err == ""
    keys = _document(config)
    imported = [k for k in keys if k["handle"] is None]
    assert len(imported) == 1 and imported[0]["private_jwk"] is None
    assert _in_token(config) == held
    assert main(["--config", str(config), "jwks"]) == 0
    jwks = json.loads(capsys.readouterr().out)
    assert imported[0]["kid"] in {k["kid"] for k in jwks["keys"]}


def test_a_public_key_as_active_is_refused_naming_the_custody(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "rotate"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "import", str(_pem(tmp_path, False))]) == 1
    _, err = capsys.readouterr()
    assert "keeps its keys in pkcs11 custody" in err and "--as retired" in err
