"""``keyrotd backup`` and ``keyrotd restore`` (docs/cli.md): the one way back under G8, which
never brings a revoked kid back. The real CLI, in-process, on an encrypted file store."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from keyrotd.cli import main
from tests.support.config import render_config

KEYSET = "api"


class Operator:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], marks: bool = True):
        self.tmp_path, self.capsys = tmp_path, capsys
        key_file = tmp_path / "storage.key"
        key_file.write_text(base64.b64encode(os.urandom(32)).decode())
        key_file.chmod(0o600)
        self.store = tmp_path / "store"
        self.marks = tmp_path / "revisions.json"
        storage: dict[str, object] = {"path": self.store, "encryption_key_file": key_file}
        if marks:
            storage["revision_file"] = self.marks
        self.config = tmp_path / "keyrotd.toml"
        keysets: list[dict[str, object]] = [
            {"name": KEYSET, "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
        ]
        self.config.write_text(render_config({"storage": storage}, keysets))

    @property
    def document(self) -> Path:
        return self.store / f"{KEYSET}.json"

    def run(self, *args: str, code: int = 0) -> tuple[str, str]:
        got = main([*args, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        assert got == code, (args, out, err)
        return out, err

    def status(self) -> dict[str, Any]:
        out, _ = self.run("status", "--json", "--keyset", KEYSET)
        keyset: dict[str, Any] = json.loads(out)["keysets"][0]
        return keyset

    def live(self) -> dict[str, str]:
        return {k["kid"]: k["state"] for k in self.status()["keys"]}

    def active(self) -> str:
        [kid] = [kid for kid, state in self.live().items() if state == "active"]
        return kid

    def backup(self) -> Path:
        target = self.tmp_path / "api.backup"
        self.run("backup", "--keyset", KEYSET, "--output", str(target))
        return target


@pytest.fixture
def operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Operator:
    made = Operator(tmp_path, capsys)
    made.run("rotate", "--keyset", KEYSET)  # the first key, and its successor
    return made


def test_backup_is_sealed_0600_with_its_revision(operator: Operator) -> None:
    revision = operator.status()["revision"]

    target = operator.backup()

    envelope = json.loads(target.read_bytes())
    assert target.stat().st_mode & 0o777 == 0o600
    assert (envelope["keyset"], envelope["revision"], envelope["encryption"]) == (
        KEYSET,
        revision,
        "AES-256-GCM",
    )
    assert operator.active() not in target.read_text()  # no kid, no key in the clear


def test_backup_to_stdout_is_the_same_envelope(operator: Operator) -> None:
    out, err = operator.run("backup", "--keyset", KEYSET)

    assert json.loads(out)["keyset"] == KEYSET
    assert "backed up to stdout" in err


def test_restore_of_a_deleted_document_goes_forward_and_leaves_the_revoked_kid_out(
    operator: Operator,
) -> None:
    backup = operator.backup()
    revoked = operator.active()
    operator.run("revoke", revoked, "--keyset", KEYSET)
    highest = operator.status()["revision"]
    operator.document.unlink()

    out, _ = operator.run("restore", str(backup))

    status = operator.status()
    assert status["revision"] > highest
    assert revoked not in {k["kid"] for k in status["keys"]}
    assert f"left out as revoked: {revoked}" in out
    jwks, _ = operator.run("jwks", "--keyset", KEYSET)
    assert revoked not in jwks
    signing, _ = operator.run("signing-key", "--keyset", KEYSET)
    assert json.loads(signing)["kid"] != revoked


def test_restore_over_a_corrupt_document_moves_it_aside(operator: Operator) -> None:
    backup = operator.backup()
    kids = operator.live()
    operator.document.write_text("{truncated")

    out, _ = operator.run("restore", str(backup), "--keyset", KEYSET)

    assert operator.live() == kids
    assert "moved the unusable document aside" in out
    assert (operator.store / f"{KEYSET}.json.unusable").read_text() == "{truncated"


def test_restore_is_the_way_back_from_a_rolled_back_document(operator: Operator) -> None:
    backup = operator.backup()
    copy = operator.document.read_bytes()
    revoked = operator.active()
    operator.run("revoke", revoked, "--keyset", KEYSET)
    operator.document.write_bytes(copy)  # the rollback: refused by every reader
    operator.run("status", "--keyset", KEYSET, code=1)
    operator.run("backup", "--keyset", KEYSET, code=1)  # nor backed up

    operator.run("restore", str(backup))

    assert revoked not in operator.live()
    assert operator.active() != revoked


def test_restore_onto_a_document_adds_back_only_unknown_keys_as_retired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = Operator(tmp_path, capsys, marks=False)
    operator.run("rotate", "--keyset", KEYSET)
    old = operator.live()
    backup = operator.backup()
    operator.document.unlink()  # lost; the keyset starts again with new keys
    operator.run("rotate", "--keyset", KEYSET)
    signing = operator.active()

    out, _ = operator.run("restore", str(backup))

    live = operator.live()
    assert {kid: live[kid] for kid in old} == dict.fromkeys(old, "retired")
    assert operator.active() == signing
    assert f"{signing} still signs" in out
    again, _ = operator.run("restore", str(backup))
    assert "nothing to add back" in again


def test_restore_onto_a_document_never_brings_a_revoked_kid_back(operator: Operator) -> None:
    backup = operator.backup()
    revoked = operator.active()
    operator.run("revoke", revoked, "--keyset", KEYSET)

    out, _ = operator.run("restore", str(backup))

    assert revoked not in operator.live()
    assert "nothing to add back" in out


def test_a_backup_of_another_keyset_is_refused(operator: Operator) -> None:
    backup = operator.backup()

    _, err = operator.run("restore", str(backup), "--keyset", "other", code=1)

    assert f"is a backup of keyset {KEYSET}, not of other" in err
