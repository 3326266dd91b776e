"""G8, revisions only go forward (docs/threat-model.md): a document moved back in storage after a
``revoke`` is refused by every reader — a running daemon keeps serving what it accepted, a
daemon started on it serves nothing for that keyset, a CLI with ``storage.revision_file`` refuses
it — and nothing is written on top of it.

Each test drives the real CLI (in-process) and real ``keyrotd run`` subprocesses over HTTP; the
AWS test moves ``AWSCURRENT`` back with boto3 on moto's server.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyrotd.cli import main
from tests.support.daemon import Daemon, make_daemon
from tests.support.http import metric
from tests.support.moto import REGION, MotoServer, fake_aws_environment

KEYSET = "api"
KEYSETS: list[dict[str, object]] = [
    {"name": KEYSET, "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
]


def encrypted_daemon(tmp_path: Path, revision_file: bool = False) -> Daemon:
    key_file = tmp_path / "storage.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    key_file.chmod(0o600)
    storage: dict[str, object] = {"encryption_key_file": key_file}
    if revision_file:
        (tmp_path / "marks").mkdir()
        storage["revision_file"] = tmp_path / "marks" / "revisions.json"
    return make_daemon(tmp_path / "work", keysets=KEYSETS, storage=storage)


def cli(daemon: Daemon, *args: str) -> int:
    return main([*args, "--config", str(daemon.config)])


def served_kids(daemon: Daemon) -> list[str]:
    reply = daemon.get(f"/keysets/{KEYSET}/jwks.json")
    assert reply.status == 200, reply.body
    return [key["kid"] for key in reply.json()["keys"]]


def signing_kid(daemon: Daemon) -> str:
    reply = daemon.admin("GET", f"/keysets/{KEYSET}/signing-key")
    assert reply.status == 200, reply.body
    return str(reply.json()["active"]["kid"])


def rollbacks(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == "storage.rollback_detected"]


def revoke_behind_a_copy(daemon: Daemon, capsys: pytest.CaptureFixture[str]) -> tuple[str, bytes]:
    """Copy the document, revoke the active kid with the CLI; the kid and the copy's bytes."""
    document = daemon.data / f"{KEYSET}.json"
    copy = document.read_bytes()
    kid = signing_kid(daemon)
    assert cli(daemon, "revoke", kid, "--keyset", KEYSET) == 0
    capsys.readouterr()
    return kid, copy


def move_back(daemon: Daemon, copy: bytes) -> None:
    """Put the old bytes back as an attacker would: a new file renamed over the document."""
    document = daemon.data / f"{KEYSET}.json"
    aside = daemon.data / "copy"
    aside.write_bytes(copy)
    aside.chmod(0o600)
    os.replace(aside, document)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = encrypted_daemon(tmp_path)
    yield running.start()
    running.stop()


def test_a_copied_back_document_is_refused_and_the_revoked_kid_stays_gone(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    kid, copy = revoke_behind_a_copy(daemon, capsys)
    daemon.wait_for(lambda: kid not in served_kids(daemon), 10, "the revoke to be served")
    signing = signing_kid(daemon)

    move_back(daemon, copy)
    daemon.wait_for(lambda: bool(rollbacks(daemon)), 10, "storage.rollback_detected")
    daemon.wait_for(
        lambda: KEYSET in daemon.get("/readyz").json()["degraded"], 10, "/readyz degraded"
    )

    [event] = rollbacks(daemon)
    assert (event["keyset"], event["accepted"] > event["found"]) == (KEYSET, True)
    assert kid not in served_kids(daemon)
    assert signing_kid(daemon) == signing != kid
    assert metric(daemon, f'keyrotd_storage_rollbacks_total{{keyset="{KEYSET}"}}') == 1
    ready = daemon.get("/readyz")
    assert (ready.status, ready.json()["degraded"]) == (200, [KEYSET])
    # nothing written on top: the refused bytes stay as they were put back, and one event is
    # logged however many refreshes (1 s apart) refuse them
    failures = f'keyrotd_storage_failures_total{{keyset="{KEYSET}"}}'
    daemon.wait_for(lambda: (metric(daemon, failures) or 0) >= 3, 10, "three refused refreshes")
    assert (daemon.data / f"{KEYSET}.json").read_bytes() == copy
    assert len(rollbacks(daemon)) == 1


def test_a_restart_with_a_revision_file_refuses_what_was_moved_back_meanwhile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = encrypted_daemon(tmp_path, revision_file=True).start()
    try:
        kid, copy = revoke_behind_a_copy(daemon, capsys)
        daemon.wait_for(lambda: kid not in served_kids(daemon), 10, "the revoke to be served")
    finally:
        daemon.stop()
    marks = tmp_path / "marks" / "revisions.json"
    assert marks.stat().st_mode & 0o777 == 0o600
    move_back(daemon, copy)

    daemon.start(wait=False)
    try:
        daemon.wait_for(lambda: bool(rollbacks(daemon)), 20, "storage.rollback_detected")
        daemon.wait_status("/healthz", 200)  # the load can log the refusal before the bind
        assert daemon.get(f"/keysets/{KEYSET}/jwks.json").status == 503
        assert daemon.get("/readyz").status == 503
        assert daemon.admin("GET", f"/keysets/{KEYSET}/signing-key").status == 503
        assert (daemon.data / f"{KEYSET}.json").read_bytes() == copy
    finally:
        daemon.stop()


def test_a_cli_run_afresh_with_the_revision_file_refuses_the_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = encrypted_daemon(tmp_path, revision_file=True)
    assert cli(daemon, "rotate", "--keyset", KEYSET) == 0  # bootstrap through the CLI
    capsys.readouterr()
    document = daemon.data / f"{KEYSET}.json"
    copy = document.read_bytes()
    assert cli(daemon, "signing-key", "--keyset", KEYSET) == 0
    kid = json.loads(capsys.readouterr().out)["kid"]
    assert cli(daemon, "revoke", kid, "--keyset", KEYSET) == 0
    capsys.readouterr()
    move_back(daemon, copy)

    for command in (["signing-key"], ["status"], ["jwks"], ["rotate", "--now"]):
        assert cli(daemon, *command, "--keyset", KEYSET) == 1, command
        out, err = capsys.readouterr()
        assert kid not in out
        assert "rolled back" in err, err
    assert document.read_bytes() == copy


@pytest.fixture
def moto() -> Iterator[MotoServer]:
    with fake_aws_environment():
        server = MotoServer(port=0)
        server.start()
        yield server
        server.stop()


def test_awscurrent_moved_back_is_refused(
    tmp_path: Path, moto: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    prefix = f"rollback-{moto.port}/"
    storage = {
        "type": "aws",
        "secret_prefix": prefix,
        "region": REGION,
        "endpoint_url": moto.url,
        "revision_file": tmp_path / "revisions.json",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    daemon = make_daemon(tmp_path, keysets=KEYSETS, storage=storage, env=env).start()
    try:
        backup = tmp_path / "api.backup"
        assert cli(daemon, "backup", "--keyset", KEYSET, "--output", str(backup)) == 0
        client = boto3.client("secretsmanager", region_name=REGION, endpoint_url=moto.url)
        secret = f"{prefix}{KEYSET}"
        before = client.describe_secret(SecretId=secret)
        [old] = [v for v, stages in before["VersionIdsToStages"].items() if "AWSCURRENT" in stages]
        kid = signing_kid(daemon)
        assert cli(daemon, "revoke", kid, "--keyset", KEYSET) == 0
        capsys.readouterr()
        daemon.wait_for(lambda: kid not in served_kids(daemon), 10, "the revoke to be served")
        after = client.describe_secret(SecretId=secret)
        [new] = [v for v, stages in after["VersionIdsToStages"].items() if "AWSCURRENT" in stages]

        client.update_secret_version_stage(
            SecretId=secret, VersionStage="AWSCURRENT", MoveToVersionId=old, RemoveFromVersionId=new
        )
        daemon.wait_for(lambda: bool(rollbacks(daemon)), 10, "storage.rollback_detected")

        assert kid not in served_kids(daemon)
        assert signing_kid(daemon) != kid
        assert KEYSET in daemon.get("/readyz").json()["degraded"]
        assert metric(daemon, f'keyrotd_storage_rollbacks_total{{keyset="{KEYSET}"}}') == 1
        current = client.describe_secret(SecretId=secret)["VersionIdsToStages"]
        assert "AWSCURRENT" in current[old]  # nothing written on top

        assert cli(daemon, "restore", str(backup)) == 0  # the way back: a write going forward
        daemon.wait_for(lambda: daemon.get("/readyz").json()["degraded"] == [], 10, "recovery")
        assert kid not in served_kids(daemon)
    finally:
        daemon.stop()


def test_the_python_issuer_keeps_signing_with_what_it_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keyrotd.client import Issuer
    from keyrotd.errors import RollbackError

    daemon = encrypted_daemon(tmp_path, revision_file=True)  # its configuration; not started
    assert cli(daemon, "rotate", "--keyset", KEYSET) == 0
    capsys.readouterr()
    copy = (daemon.data / f"{KEYSET}.json").read_bytes()
    with Issuer.from_config(str(daemon.config), KEYSET, background=False, environ={}) as issuer:
        revoked = issuer.signing_key()["kid"]
        assert cli(daemon, "revoke", revoked, "--keyset", KEYSET) == 0
        assert issuer.refresh()
        signing = issuer.signing_key()["kid"]
        move_back(daemon, copy)

        assert not issuer.refresh()
        assert issuer.signing_key()["kid"] == signing != revoked
    assert '"event": "storage.rollback_detected"' in capsys.readouterr().err
    with pytest.raises(RollbackError):  # a new issuer, with the revision file
        Issuer.from_config(str(daemon.config), KEYSET, background=False, environ={})


def test_restore_is_how_an_operator_brings_a_refused_keyset_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = encrypted_daemon(tmp_path, revision_file=True).start()
    try:
        backup = tmp_path / "api.backup"
        assert cli(daemon, "backup", "--keyset", KEYSET, "--output", str(backup)) == 0
        kid, copy = revoke_behind_a_copy(daemon, capsys)
        move_back(daemon, copy)
        daemon.wait_for(
            lambda: KEYSET in daemon.get("/readyz").json()["degraded"], 10, "/readyz degraded"
        )

        assert cli(daemon, "restore", str(backup)) == 0

        daemon.wait_for(lambda: daemon.get("/readyz").json()["degraded"] == [], 10, "recovery")
        assert kid not in served_kids(daemon)
        assert signing_kid(daemon) != kid
        assert len(rollbacks(daemon)) == 1
    finally:
        daemon.stop()
