"""A daemon on a raft OpenBao with TLS (verified with ``storage.ca_file``) keeps serving its JWKS
while the server is sealed and while it is stopped, logs ``storage.read_failed`` when that starts
and ``storage.recovered`` when the server is back, and never leaks the token (docs/storage.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrotd.errors import StorageError, is_temporary
from keyrotd.storage.vault import VaultSettings, open_vault
from tests.support.daemon import Daemon, make_daemon
from tests.support.openbao import BaoServer, raft_server

pytestmark = pytest.mark.slow


@pytest.fixture
def bao_raft(tmp_path: Path) -> Iterator[BaoServer]:
    with raft_server(tmp_path / "bao") as server:
        yield server


def vault_daemon(workdir: Path, server: BaoServer) -> Daemon:
    token_file = workdir / "vault.token"
    workdir.mkdir(parents=True, exist_ok=True)
    token_file.write_text(server.root_token)
    token_file.chmod(0o600)
    storage = {
        "type": "vault",
        "url": server.url,
        "token_file": token_file,
        "ca_file": server.ca_file,
        "path_prefix": "keyrotd/",
    }
    return make_daemon(workdir, storage=storage)


def events(daemon: Daemon, name: str) -> int:
    return sum(1 for event in daemon.log_events() if event.get("event") == name)


def serves_jwks(daemon: Daemon, kids: set[str]) -> bool:
    reply = daemon.get("/.well-known/jwks.json", timeout=2)
    assert reply.status == 200
    assert {key["kid"] for key in reply.json()["keys"]} == kids
    return True


def test_sealed_and_stopped_server_daemon_keeps_serving_and_recovers(
    tmp_path: Path, bao_raft: BaoServer
) -> None:
    daemon = vault_daemon(tmp_path / "d", bao_raft)
    untrusting = VaultSettings(url=bao_raft.url, token_file=tmp_path / "d" / "vault.token")
    with pytest.raises(StorageError, match="TLS to Vault") as refused:
        open_vault(untrusting).read("main")  # the test CA is not among the system's
    assert not is_temporary(refused.value)
    assert "storage.ca_file" in refused.value.hint
    daemon.start()
    try:
        kids = {key["kid"] for key in daemon.get("/.well-known/jwks.json").json()["keys"]}
        assert kids

        bao_raft.api("PUT", "sys/seal")  # 503 to every request
        daemon.wait_for(lambda: events(daemon, "storage.read_failed") == 1, 20, "read_failed")
        assert serves_jwks(daemon, kids)
        assert daemon.get("/readyz").status == 200
        bao_raft.unseal()
        daemon.wait_for(lambda: events(daemon, "storage.recovered") == 1, 30, "recovered")

        bao_raft.stop()  # unreachable
        daemon.wait_for(lambda: events(daemon, "storage.read_failed") == 2, 20, "read_failed")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert serves_jwks(daemon, kids)
            time.sleep(0.2)
        bao_raft.restart()  # the same data, unsealed again
        daemon.wait_for(lambda: events(daemon, "storage.recovered") == 2, 30, "recovered")
        assert serves_jwks(daemon, kids)
    finally:
        assert daemon.stop() == 0
    text = daemon.log_text()
    assert bao_raft.root_token not in text
    failures = [e for e in daemon.log_events() if e.get("event") == "storage.read_failed"]
    assert all(bao_raft.url in str(e) for e in failures)
