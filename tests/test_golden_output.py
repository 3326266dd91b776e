"""The CLI's output, byte for byte: ``status --json``, ``jwks`` and ``inspect`` on a fixed store.

The store is built at test time by the manager on a manual clock, from Ed25519 keys derived from
fixed 32-byte seeds (test constants, not secrets: only the seeds and the public outputs are
committed). The commands then run in-process at a fixed ``now``; their stdout, with the store's
directory written as ``<dir>``, must equal the files under ``tests/golden/``, recorded from the
code before a restructure. ``RECORD_GOLDEN_OUTPUT=1`` rewrites them (only when
the output is meant to change).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.keys import PRIVATE_MEMBERS, NewKey, thumbprint
from keyrotd.lifecycle.commands import Revoke
from keyrotd.model import Jwk
from keyrotd.storage import open_storage
from keyrotd.tokens import import_key, sign_compact
from tests.support.keysets import open_writer

GOLDEN = Path(__file__).parent / "golden"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
START = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
"""When the first key of ``default`` was made; the history is a literal schedule after it."""
NOW = START + 2 * DAY + 18 * HOUR
"""The fixed time the commands run at: C signs, D activates in 6h, A expired, B revoked."""
SEEDS = {name: bytes([number]) * 32 for number, name in enumerate("ABCDOPX", start=1)}
"""The Ed25519 seed of each key: A..D of ``default``, O and P of ``other``, X never issued."""


def seeded_key(name: str) -> NewKey:
    private = OKPKey.import_key(Ed25519PrivateKey.from_private_bytes(SEEDS[name]))
    jwk = {k: str(v) for k, v in private.as_dict(private=True).items()}
    public = {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS}
    return NewKey(kid=thumbprint(public), alg="EdDSA", public_jwk=public, private_jwk=jwk)


def signing_jwk(name: str) -> Jwk:
    made = seeded_key(name)
    return {**made.private_jwk, "kid": made.kid, "alg": "EdDSA", "use": "sig"}


class FixedKeys:
    """A key factory handing out the seeded keys in order (the manager's ``key_factory``)."""

    def __init__(self, names: str) -> None:
        self._names: Iterator[str] = iter(names)

    def __call__(self, alg: str, rsa_key_size: int) -> NewKey:
        assert alg == "EdDSA", alg
        return seeded_key(next(self._names))


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Store:
    directory: Path
    config: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    directory = tmp_path_factory.mktemp("golden")
    config = directory / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{directory / "data"}"\n'
        '[[keysets]]\nname = "default"\nalgorithm = "EdDSA"\nrotation_period = "1d"\n'
        'publish_ahead = "12h"\ntoken_lifetime = "1h"\nclock_skew = "5m"\n'
        '[[keysets]]\nname = "other"\nalgorithm = "EdDSA"\n'
    )
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    clock = ManualClock(START)
    mgr = open_writer(storage, settings.keyset("default"), clock, key_factory=FixedKeys("ABCD"))
    for offset in (0 * HOUR, 12 * HOUR, DAY, DAY + 2 * HOUR, DAY + 12 * HOUR, 2 * DAY):
        clock.now = START + offset
        mgr.apply()
    clock.now = START + 2 * DAY + HOUR
    mgr.apply(Revoke(seeded_key("B").kid))
    clock.now = START + 2 * DAY + 12 * HOUR
    mgr.apply()
    other = settings.keyset("other")
    clock.now = START + DAY
    open_writer(storage, other, clock, key_factory=FixedKeys("OP")).apply()
    storage.close()
    return Store(directory, config)


def at(offset: timedelta) -> int:
    return int((NOW + offset).timestamp())


def token(name: str, **claims: Any) -> str:
    jwk = signing_jwk(name)
    body = {"sub": "alice", "aud": "api", "iss": "https://auth.example", **claims}
    return sign_compact(
        {"alg": "EdDSA", "kid": jwk["kid"], "typ": "JWT"}, body, import_key(jwk, "EdDSA")
    )


TOKENS = {
    "valid": token("C", iat=at(-timedelta(minutes=1)), exp=at(timedelta(minutes=10))),
    "expired": token("C", iat=at(-2 * HOUR), exp=at(-HOUR)),
    "other-keyset": token("O", iat=at(-timedelta(minutes=1)), exp=at(timedelta(minutes=10))),
    "unknown-kid": token("X", iat=at(-timedelta(minutes=1)), exp=at(timedelta(minutes=10))),
}

CASES: dict[str, list[str]] = {
    "status.json": ["status", "--json"],
    "jwks.json": ["jwks"],
    "jwks-other.json": ["jwks", "--keyset", "other"],
    **{f"inspect-{name}.json": ["inspect", "--json", t] for name, t in TOKENS.items()},
    "inspect-valid.txt": ["inspect", "--audience", "api", TOKENS["valid"]],
    "inspect-expired.txt": ["inspect", TOKENS["expired"]],
}


def run_at_now(store: Store, argv: list[str]) -> tuple[int, str]:
    """``keyrotd --config CONFIG ARGV`` in-process with the clock stopped at :data:`NOW`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(store.config), *argv], clock=lambda: NOW)
    assert err.getvalue() == ""
    return code, out.getvalue().replace(str(store.directory), "<dir>")


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_is_byte_for_byte_the_recorded_one(name: str, store: Store) -> None:
    code, out = run_at_now(store, CASES[name])
    assert code == (
        0 if name in {"inspect-valid.json", "inspect-valid.txt"} or "inspect" not in name else 1
    )
    golden = GOLDEN / name
    if os.environ.get("RECORD_GOLDEN_OUTPUT") == "1":
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")
    for made in map(seeded_key, SEEDS):
        secret = set(made.private_jwk.values()) - set(made.public_jwk.values())
        assert secret and not any(value in out for value in secret)


def test_the_recorded_tokens_are_judged_alike_by_pyjwt(store: Store) -> None:
    """The valid token verifies with PyJWT at :data:`NOW`, the expired one does not."""
    made = seeded_key("C")
    key = jwt.PyJWK({**made.public_jwk, "alg": "EdDSA"}).key
    options = {"verify_exp": False}
    claims = jwt.decode(TOKENS["valid"], key, ["EdDSA"], audience="api", options=options)
    assert claims["iat"] < NOW.timestamp() < claims["exp"]
    expired = jwt.decode(TOKENS["expired"], key, ["EdDSA"], audience="api", options=options)
    assert expired["exp"] < NOW.timestamp()
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(TOKENS["expired"], key, ["EdDSA"], audience="api")
