"""Keysets in PKCS#11 custody on a real SoftHSM2 token: the writer makes keys in the token, the
document and the JWKS hold public halves only, retired keys are destroyed, orphans are swept,
and signing-key is refused by the CLI and the daemon in the same words."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.custody import close_all, open_custody
from keyrotd.errors import ConflictError
from keyrotd.keys import PRIVATE_MEMBERS
from keyrotd.lifecycle.commands import Revoke, Rotate
from keyrotd.model import KeyState
from keyrotd.storage import open_storage
from keyrotd.storage.interface import Storage, Versioned
from keyrotd.writer import KeysetWriter
from tests.support.clock import T0_DECEMBER as T0
from tests.support.clock import ManualClock as Clock
from tests.support.daemon import make_daemon
from tests.support.keysets import open_writer
from tests.support.softhsm import SoftHsm


@dataclass
class Setup:
    config: Path
    hsm: SoftHsm


@pytest.fixture
def setup(softhsm: SoftHsm, tmp_path: Path) -> Iterator[Setup]:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n'
        + softhsm.custody_toml(tmp_path, pin_line=True)
        + '[[keysets]]\nname = "api"\nalgorithm = "ES256"\ncustody = "pkcs11"\n'
        'rotation_period = "1h"\npublish_ahead = "1h"\ntoken_lifetime = "10m"\n'
        'clock_skew = "1m"\n'
    )
    yield Setup(config, softhsm)
    close_all()


def _manager(setup: Setup, clock: Clock, storage: Storage | None = None) -> KeysetWriter:
    settings = load_settings(setup.config, {})
    return open_writer(
        storage or open_storage(settings.storage),
        settings.keyset("api"),
        clock,
        custody=open_custody(settings, "pkcs11"),
        sleep=lambda _: None,
    )


def _in_token(setup: Setup) -> set[str]:
    settings = load_settings(setup.config, {})
    return {k.kid for k in open_custody(settings, "pkcs11").held("api")}


def test_keys_are_made_in_the_token_and_the_document_holds_no_private_half(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(setup.config), "rotate"]) == 0
    envelope = json.loads((setup.config.parent / "data" / "api.json").read_text())
    assert envelope["encryption"] == "none"
    keys = json.loads(base64.b64decode(envelope["payload"]))["keys"]
    assert len(keys) == 2  # the first key (active) and its pending successor
    for key in keys:
        assert key["private_jwk"] is None
        assert key["handle"] == key["kid"]
        assert not PRIVATE_MEMBERS & set(key["public_jwk"])
    assert _in_token(setup) == {k["kid"] for k in keys}
    capsys.readouterr()
    assert main(["--config", str(setup.config), "jwks"]) == 0
    jwks = json.loads(capsys.readouterr().out)
    assert {k["kid"] for k in jwks["keys"]} == {k["kid"] for k in keys}
    assert all(not PRIVATE_MEMBERS & set(k) for k in jwks["keys"])


def test_signing_key_is_refused_naming_the_custody_and_the_signing_api(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(setup.config), "rotate"]) == 0
    capsys.readouterr()
    assert main(["--config", str(setup.config), "signing-key"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "keeps its keys in pkcs11 custody" in err
    assert "POST /keysets/api/sign" in err


def test_a_retired_or_revoked_key_is_destroyed_in_the_token(setup: Setup) -> None:
    clock = Clock(T0)
    manager = _manager(setup, clock)
    first = manager.apply(Rotate()).keyset
    active = first.active
    assert active is not None
    manager.apply(Rotate(now=True))  # the successor signs; the first key retires
    assert active.kid not in _in_token(setup)
    keyset = manager.view()
    retired = keyset.find(active.kid)
    assert retired is not None and retired.state is KeyState.RETIRED
    assert retired.handle == active.kid  # the record stays: status says what became of it
    pending = keyset.successor
    assert pending is not None
    manager.apply(Revoke(pending.kid))
    assert _in_token(setup) == {k.kid for k in manager.view().keys if k.holds_private}


class ConflictOnce:
    """A store whose first write loses its compare-and-swap (another writer won)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.lost = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def read(self, keyset: str) -> Versioned | None:
        return self.inner.read(keyset)

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        if not self.lost:
            self.lost = True
            raise ConflictError("lost")
        return self.inner.write(keyset, data, expected_version)


def test_after_a_lost_compare_and_swap_the_token_holds_exactly_the_written_keys(
    setup: Setup,
) -> None:
    settings = load_settings(setup.config, {})
    storage = ConflictOnce(open_storage(settings.storage))
    manager = _manager(setup, Clock(T0), storage)  # type: ignore[arg-type]
    outcome = manager.apply(Rotate())
    assert storage.lost
    assert _in_token(setup) == {k.kid for k in outcome.keyset.keys}


def test_orphans_older_than_ten_minutes_are_swept_and_younger_ones_kept(setup: Setup) -> None:
    clock = Clock(T0)
    manager = _manager(setup, clock)
    manager.apply(Rotate())
    settings = load_settings(setup.config, {})
    custody = open_custody(settings, "pkcs11")
    old_orphan = custody.create("api", "ES256", 2048, T0 - timedelta(minutes=11))
    young_orphan = custody.create("api", "ES256", 2048, T0 - timedelta(minutes=1))
    other_keyset = custody.create("web", "ES256", 2048, T0 - timedelta(hours=1))
    assert manager.sweep(manager.view(), T0, every=timedelta(0)) == 1
    held = {k.kid for k in custody.held("api")}
    assert old_orphan.kid not in held
    assert young_orphan.kid in held
    assert {k.kid for k in custody.held("web")} == {other_keyset.kid}
    # once the grace has passed, custody holds exactly the keys the document names
    later = T0 + timedelta(minutes=10, seconds=1)
    assert manager.sweep(manager.view(later), later, every=timedelta(0)) == 1
    assert _in_token(setup) == {k.kid for k in manager.view(later).keys if k.holds_private}


def test_the_daemon_serves_the_jwks_and_answers_signing_key_409(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    daemon = make_daemon(
        tmp_path / "d",
        keysets=[
            {
                "name": "api",
                "algorithm": "ES256",
                "custody": "pkcs11",
                "rotation_period": "1h",
                "publish_ahead": "1h",
            },
            {"name": "plain", "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"},
        ],
        custody=softhsm.custody(tmp_path),
        env={"SOFTHSM2_CONF": str(softhsm.conf)},
    )
    daemon.start()
    try:
        jwks = daemon.get("/keysets/api/jwks.json")
        assert jwks.status == 200
        kids = {k["kid"] for k in json.loads(jwks.body)["keys"]}
        assert len(kids) == 2
        refused = daemon.admin("GET", "/keysets/api/signing-key")
        assert refused.status == 409
        body = json.loads(refused.body)
        assert body["keyset"] == "api"
        assert "pkcs11 custody" in body["error"] and "POST /keysets/api/sign" in body["error"]
        assert daemon.admin("GET", "/keysets/plain/signing-key").status == 200
    finally:
        daemon.stop()
    assert softhsm.pin not in daemon.log_text()
