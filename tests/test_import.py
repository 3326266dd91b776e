"""``keyrotd import FILE [--keyset N] [--as active|retired] [--until T]`` (docs/cli.md): adopting a
key made elsewhere, through the one writer, at the time an injected clock tells."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyrotd.cli import main
from tests.support.clock import T0, ManualClock

HOUR = timedelta(hours=1)


def run(capsys: pytest.CaptureFixture[str], clock: ManualClock, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), clock)
    out, err = capsys.readouterr()
    return code, out, err


def ec_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 by hand (not keyrotd's code): the required members, sorted, no spaces."""
    numbers = key.public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    members = {"crv": "P-256", "kty": "EC", "x": b64(numbers.x), "y": b64(numbers.y)}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Store:
    """A file store with keyset ``a`` (ES256, rotation 24h, publish_ahead 2h) and a clock."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.dir = tmp_path
        self.capsys = capsys
        self.clock = ManualClock(T0)
        self.config = tmp_path / "keyrotd.toml"
        self.config.write_text(
            f'[storage]\npath = "{tmp_path / "data"}"\n'
            '[[keysets]]\nname = "a"\nalgorithm = "ES256"\nrotation_period = "24h"\n'
            'publish_ahead = "2h"\n'
        )

    def run(self, *argv: str) -> tuple[int, str, str]:
        return run(self.capsys, self.clock, "--config", str(self.config), *argv)

    def status(self) -> dict[str, object]:
        code, out, _ = self.run("status", "--json")
        assert code == 0
        keysets: list[dict[str, object]] = json.loads(out)["keysets"]
        return keysets[0]

    def keys(self) -> dict[str, dict[str, object]]:
        keys = self.status()["keys"]
        assert isinstance(keys, list)
        return {str(k["kid"]): k for k in keys}

    def jwks_kids(self) -> list[str]:
        code, out, _ = self.run("jwks")
        assert code == 0
        return [k["kid"] for k in json.loads(out)["keys"]]

    def signing_kid(self) -> str:
        code, out, _ = self.run("signing-key")
        assert code == 0
        return str(json.loads(out)["kid"])

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path


@pytest.fixture
def store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Store:
    return Store(tmp_path, capsys)


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_import_active_signs_at_once_and_retires_the_old_key(store: Store) -> None:
    assert store.run("rotate")[0] == 0  # the first key, and a successor activating at T0 + 2h
    store.clock.advance(HOUR)
    old = store.signing_kid()
    (pending,) = [k for k, v in store.keys().items() if v["state"] == "pending"]
    imported = ec.generate_private_key(ec.SECP256R1())
    kid = ec_thumbprint(imported.public_key())
    # a token the issuer signed before moving onto keyrotd, under the thumbprint kid
    legacy = jwt.encode({"sub": "old"}, imported, algorithm="ES256", headers={"kid": kid})
    code, out, err = store.run("import", str(store.write("key.pem", pem(imported))))
    assert code == 0, err
    # the exception to publish-ahead is logged as such (G2), as for rotate --now
    (logged,) = [json.loads(line) for line in err.splitlines()]
    assert logged["event"] == "key.activated" and logged["exception"] == "import --as active"
    assert kid in out
    assert "PRIVATE" not in out and '"d"' not in out
    assert store.signing_kid() == kid
    keys = store.keys()
    assert keys[kid]["state"] == "active"
    assert keys[old]["state"] == "retired"
    assert keys[pending]["state"] == "pending"
    # the next rotation counts from the import: 24h later, not at the old schedule (T0 + 2h)
    assert keys[pending]["activates_at"] == "2026-03-02T01:00:00Z"
    code, out, _ = store.run("jwks")
    jwk = next(k for k in json.loads(out)["keys"] if k["kid"] == kid)
    assert jwt.decode(legacy, jwt.PyJWK(jwk).key, algorithms=["ES256"]) == {"sub": "old"}
    code, out, _ = store.run("inspect", legacy)
    assert code == 0, out


def test_import_active_into_a_new_keyset_makes_it_the_first_key(store: Store) -> None:
    imported = ec.generate_private_key(ec.SECP256R1())
    code, _, err = store.run("import", str(store.write("key.pem", pem(imported))))
    assert code == 0, err
    assert store.signing_kid() == ec_thumbprint(imported.public_key())
    assert [v["state"] for v in store.keys().values()].count("active") == 1


def test_import_a_private_jwk(store: Store) -> None:
    store.run("rotate")
    imported = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(imported))
    jwk["kid"] = "the-old-kid"
    code, _, err = store.run("import", str(store.write("key.json", json.dumps(jwk).encode())))
    assert code == 0
    kid = ec_thumbprint(imported.public_key())
    assert store.signing_kid() == kid
    assert "the-old-kid" in err  # a note: tokens with the file's kid will not find the key


def test_import_retired_publishes_until_t_and_never_signs(store: Store) -> None:
    store.run("rotate")
    signing = store.signing_kid()
    legacy = ec.generate_private_key(ec.SECP256R1())
    kid = ec_thumbprint(legacy.public_key())
    path = store.write("legacy.pem", public_pem(legacy))
    code, _, err = store.run("import", str(path), "--as", "retired")
    assert code == 2
    assert "--until" in err
    code, _, err = store.run(
        "import", str(path), "--as", "retired", "--until", "2026-03-01T05:00:00Z"
    )
    assert (code, err) == (0, ""), err
    assert kid in store.jwks_kids()
    assert store.keys()[kid]["state"] == "retired"
    assert store.signing_kid() == signing
    store.clock.advance(timedelta(hours=4, minutes=59))
    assert kid in store.jwks_kids() and store.signing_kid() != kid
    store.clock.advance(timedelta(minutes=2))
    assert kid not in store.jwks_kids()
    # a private key as retired: only its public half is kept
    other = ec.generate_private_key(ec.SECP256R1())
    assert store.run("import", str(store.write("o.pem", pem(other))), "--as", "retired",
                     "--until", "2d")[0] == 0  # fmt: skip
    data = b"".join(p.read_bytes() for p in (store.dir / "data").glob("*.json"))
    private = other.private_numbers().private_value.to_bytes(32, "big")
    assert base64.urlsafe_b64encode(private).rstrip(b"=") not in data


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--as", "retired", "--until", "2026-02-01T00:00:00Z"], "--until"),
        (["--as", "retired", "--until", "soon"], "--until"),
        (["--until", "2d"], "--until"),
    ],
)
def test_bad_until_exits_2(store: Store, argv: list[str], words: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    code, _, err = store.run("import", str(store.write("k.pem", pem(key))), *argv)
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1


def test_refusals_exit_1_naming_the_cause(store: Store) -> None:
    store.run("rotate")
    key = ec.generate_private_key(ec.SECP256R1())
    path = store.write("k.pem", pem(key))
    assert store.run("import", str(path))[0] == 0
    kid = ec_thumbprint(key.public_key())
    code, _, err = store.run("import", str(path))
    assert code == 1 and "already" in err and kid in err
    # revoked: never back, not even as retired
    assert store.run("revoke", kid)[0] == 0  # the active key: the pending successor takes over
    for argv in ([], ["--as", "retired", "--until", "2d"]):
        code, _, err = store.run("import", str(path), *argv)
        assert code == 1 and "revoked" in err, err
    cases = {
        "public.pem": (public_pem(ec.generate_private_key(ec.SECP256R1())), "private"),
        "rsa.pem": (pem(rsa.generate_private_key(65537, 2048)), "ES256"),
        "p384.pem": (pem(ec.generate_private_key(ec.SECP384R1())), "ES256"),
        "junk.pem": (b"-----BEGIN PRIVATE KEY-----\nnot a key\n", "junk.pem"),
        "junk.json": (b'{"kty": "EC"}', "junk.json"),
        "other-alg.json": (
            json.dumps(
                {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)), "alg": "ES384"}
            ).encode(),
            "ES384",
        ),
    }
    for name, (data, words) in cases.items():
        code, _, err = store.run("import", str(store.write(name, data)))
        assert code == 1, name
        assert words in err, (name, err)
        assert len(err.strip().splitlines()) == 1
        assert "Traceback" not in err
    code, _, err = store.run("import", str(store.dir / "missing.pem"))
    assert code in (1, 2) and "missing.pem" in err
