"""Scoped clients in a running daemon: 401/403/404 by scope, SIGHUP re-reads the clients file
(even when the rest of the new configuration is refused), a bad clients file keeps the old ones.

Clients are made by ``keyrotd client add`` (in-process ``main``); the daemon is a real
``keyrotd run`` subprocess reached over HTTP (``tests.support.daemon``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import signal
import stat
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.support.daemon import TOKEN, Daemon
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

KEYSETS: list[dict[str, object]] = [
    {"name": name, "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
    for name in ("a", "b")
]


def client_command(daemon: Daemon, *argv: str) -> tuple[int, str]:
    """``keyrotd --config CONFIG client ARGV...``: exit code and stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(daemon.config), "client", *argv])
    return code, out.getvalue()


def add_client(daemon: Daemon, name: str, *scopes: str) -> str:
    """A new client; its token (the last line ``client add`` prints)."""
    code, out = client_command(daemon, "add", name, *(a for s in scopes for a in ("--scope", s)))
    assert code == 0, out
    return out.splitlines()[-1]


def scoped_daemon(daemon_factory: DaemonFactory, *, admin: bool = True) -> Daemon:
    """Keysets ``a`` and ``b``, a clients file (and the admin token file unless ``admin=False``)."""
    daemon = daemon_factory(keysets=KEYSETS, admin=admin)
    clients = daemon.workdir / "clients.toml"
    text = daemon.config.read_text()
    daemon.config.write_text(
        text.replace("[server]\n", f'[server]\nadmin_clients_file = "{clients}"\n')
    )
    return daemon


def running_with_ci(daemon_factory: DaemonFactory) -> tuple[Daemon, str]:
    """A started :func:`scoped_daemon` with the client ``ci`` (``signing-key:a``), and its token."""
    daemon = scoped_daemon(daemon_factory)
    token = add_client(daemon, "ci", "signing-key:a")
    daemon.start()
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 200
    return daemon, token


def reload(daemon: Daemon, expect: str) -> None:
    """SIGHUP, then wait until the log has one more ``expect`` line."""
    before = daemon.log_text().count(expect)
    daemon.send(signal.SIGHUP)
    wait_for(lambda: daemon.log_text().count(expect) > before, 10, f"{expect} after SIGHUP")


def test_a_signing_key_client_reads_its_keyset_only(daemon_factory: DaemonFactory) -> None:
    daemon = scoped_daemon(daemon_factory)
    issuer = add_client(daemon, "issuer-a", "signing-key:a")
    everywhere = add_client(daemon, "reader", "signing-key:*")
    daemon.start()

    reply = daemon.admin("GET", "/keysets/a/signing-key", issuer)
    assert reply.status == 200 and "d" in reply.json()["active"]
    assert daemon.admin("GET", "/signing-key", issuer).status == 200  # a is the first keyset
    for method, path in (
        ("GET", "/keysets/b/signing-key"),
        ("POST", "/keysets/a/rotate"),
        ("POST", "/keysets/a/rotate?now=true"),
        ("POST", "/keysets/a/keys/some-kid/revoke"),
        ("GET", "/keysets/nope/signing-key"),  # outside its scope: 403, not 404
    ):
        refused = daemon.admin(method, path, issuer)
        assert refused.status == 403, (method, path, refused.body)
        assert refused.json()["error"].startswith("client issuer-a does not have the scope ")
    assert daemon.admin("GET", "/keysets/b/signing-key", everywhere).status == 200
    unknown = daemon.admin("GET", "/keysets/nope/signing-key", everywhere)
    assert unknown.status == 404 and unknown.json() == {"error": "unknown keyset nope"}
    assert daemon.admin("POST", "/keysets/a/rotate", everywhere).status == 403
    assert daemon.admin("GET", "/keysets/a/signing-key", "not-a-client").status == 401
    assert daemon.admin("POST", "/keysets/b/rotate", TOKEN).status == 200  # admin: every scope


def test_clients_alone_enable_the_endpoints(daemon_factory: DaemonFactory) -> None:
    daemon = scoped_daemon(daemon_factory, admin=False)
    rotator = add_client(daemon, "deploy", "rotate:b")
    daemon.start()
    assert daemon.admin("POST", "/keysets/b/rotate", rotator).status == 200
    assert daemon.admin("GET", "/keysets/b/signing-key", rotator).status == 403
    assert daemon.admin("GET", "/keysets/b/signing-key", TOKEN).status == 401


def test_a_removed_client_gets_401_after_sighup(daemon_factory: DaemonFactory) -> None:
    daemon, token = running_with_ci(daemon_factory)

    clients = daemon.workdir / "clients.toml"
    assert stat.S_IMODE(clients.stat().st_mode) == 0o600
    content = clients.read_text()
    assert token not in content and hashlib.sha256(token.encode()).hexdigest() in content

    assert client_command(daemon, "remove", "ci")[0] == 0
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 200  # until SIGHUP
    reload(daemon, "config.reloaded")
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 401
    added = add_client(daemon, "ci2", "signing-key:b")
    reload(daemon, "config.reloaded")
    assert daemon.admin("GET", "/keysets/b/signing-key", added).status == 200


def test_the_clients_file_is_reread_when_the_configuration_is_refused(
    daemon_factory: DaemonFactory,
) -> None:
    daemon, token = running_with_ci(daemon_factory)
    assert client_command(daemon, "remove", "ci")[0] == 0
    config = daemon.config.read_text()
    daemon.config.write_text(config + "[nonsense]\n")  # an unknown section: refused
    reload(daemon, "configuration reload failed")
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 401
    assert daemon.admin("GET", "/keysets/a/signing-key", TOKEN).status == 200


def test_a_refused_clients_file_keeps_the_clients_in_force(daemon_factory: DaemonFactory) -> None:
    daemon, token = running_with_ci(daemon_factory)
    clients = daemon.workdir / "clients.toml"
    good = clients.read_text()
    clients.write_text(good.replace("scopes", "scope"))  # an unknown key: refused
    reload(daemon, "clients.reload_failed")
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 200
    refused = [e for e in daemon.log_events() if e.get("event") == "clients.reload_failed"]
    assert len(refused) == 1
    assert str(clients) in refused[0]["error"] and "\n" not in refused[0]["error"]
    assert "config.reloaded" in daemon.log_text()  # the rest of the configuration applies

    clients.write_text(good)
    clients.chmod(0o644)
    reload(daemon, "clients.reload_failed")
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 200
    assert token not in daemon.log_text()


@pytest.mark.parametrize("mode", [0o644, 0o620])
def test_an_unsafe_clients_file_refuses_the_start(daemon_factory: DaemonFactory, mode: int) -> None:
    daemon = scoped_daemon(daemon_factory)
    add_client(daemon, "ci", "signing-key:a")
    clients: Path = daemon.workdir / "clients.toml"
    clients.chmod(mode)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 2
    assert "server.admin_clients_file" in daemon.log_text()
