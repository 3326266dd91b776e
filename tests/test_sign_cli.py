"""``keyrotd sign``: a token signed by the active key read from storage, checked with PyJWT and
with ``keyrotd inspect`` (docs/cli.md)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import jwt
import pytest

from keyrotd.cli import main
from keyrotd.model import ALGORITHMS

ISSUER = "https://auth.example.com"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "keyrotd.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        f'[[keysets]]\nname = "a"\nalgorithm = "ES256"\ntoken_lifetime = "10m"\n'
        f'issuer = "{ISSUER}"\n'
        '[[keysets]]\nname = "b"\nalgorithm = "EdDSA"\n'
    )
    for keyset in ("a", "b"):
        assert run(capsys, "--config", str(path), "rotate", "--keyset", keyset)[0] == 0
    return path


def verify(capsys: pytest.CaptureFixture[str], config: Path, keyset: str, token: str) -> dict:
    code, out, _ = run(capsys, "--config", str(config), "jwks", "--keyset", keyset)
    assert code == 0
    jwks = jwt.PyJWKSet.from_dict(json.loads(out))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict = jwt.decode(token, key.key, algorithms=[key.algorithm_name])
    code, out, _ = run(capsys, "--config", str(config), "inspect", token, "--keyset", keyset)
    assert code == 0, out
    return claims


def test_sign_prints_one_token(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--config", str(config), "sign", '{"sub": "alice"}')
    assert (code, err) == (0, "")
    token = out.strip()
    assert out == token + "\n"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    code, out, _ = run(capsys, "--config", str(config), "signing-key", "--keyset", "a")
    assert header["kid"] == json.loads(out)["kid"]
    claims = verify(capsys, config, "a", token)
    assert claims["sub"] == "alice"
    assert claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 600


def test_sign_reads_stdin_and_takes_a_lifetime(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"sub": "bob"}\n'))
    argv = ("--config", str(config), "sign", "-", "--keyset", "b", "--lifetime", "90")
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    claims = verify(capsys, config, "b", out.strip())
    assert claims["sub"] == "bob"
    assert claims["exp"] - claims["iat"] == 90
    assert "iss" not in claims
    assert jwt.get_unverified_header(out.strip())["alg"] == "EdDSA"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, _ = run(capsys, "--config", str(config), "sign", "--lifetime", "2m")
    assert code == 2  # no claims on stdin


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["not json"], "JSON"),
        (["[1]"], "claims"),
        (['{"exp": 1}'], "exp"),
        (['{"iss": "https://other.example"}'], "iss"),
        (["{}", "--lifetime", "11m"], "lifetime"),
        (["{}", "--lifetime", "soon"], "--lifetime"),
    ],
)
def test_refusals_exit_2_in_one_line(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    code, out, err = run(capsys, "--config", str(config), "sign", *argv)
    assert code == 2
    assert out == ""
    assert words in err
    assert len(err.strip().splitlines()) == 1


def test_no_store_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keyrotd.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / "nothing"}"\n')
    code, out, err = run(capsys, "--config", str(path), "sign", "{}")
    assert code == 1
    assert out == ""
    assert err.startswith("keyrotd: ")


def test_every_algorithm_signs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = f'[storage]\npath = "{tmp_path / "data"}"\n' + "".join(
        f'[[keysets]]\nname = "{alg.lower()}"\nalgorithm = "{alg}"\n' for alg in ALGORITHMS
    )
    path = tmp_path / "keyrotd.toml"
    path.write_text(body)
    for alg in ALGORITHMS:
        assert run(capsys, "--config", str(path), "rotate", "--keyset", alg.lower())[0] == 0
        code, out, err = run(capsys, "--config", str(path), "sign", "{}", "--keyset", alg.lower())
        assert code == 0, err
        assert jwt.get_unverified_header(out.strip())["alg"] == alg
        verify(capsys, path, alg.lower(), out.strip())
