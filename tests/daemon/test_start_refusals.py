"""What ``keyrotd run`` and ``keyrotd check-config`` both refuse (exit 2, one line) before binding:
a short admin token, a TLS private key others can read or the group can write, and admin
endpoints over plain HTTP on an address other hosts reach, unless ``server.insecure_admin``
(then ``run`` warns at every start). A SIGHUP cannot enable the latter either."""

from __future__ import annotations

import contextlib
import io
import signal
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.faults.test_bad_input import keyrotd_process
from tests.support.daemon import TOKEN, Daemon, free_port
from tests.support.waiting import wait_for

from .conftest import DaemonFactory
from .test_tls import TestCA


def check_config(config: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["check-config", "--config", str(config)])
    return code, err.getvalue()


def both_refuse(directory: Path, config: Path, *needles: str) -> None:
    """``check-config`` and ``run`` exit 2 with the same one line holding every needle."""
    answers = [
        keyrotd_process(directory, "--config", str(config), c) for c in ("check-config", "run")
    ]
    for code, out, err in answers:
        assert (code, out) == (2, ""), err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert all(needle in err for needle in needles), err
    assert answers[0][2] == answers[1][2]


def write_config(directory: Path, server: str) -> Path:
    config = directory / "keyrotd.toml"
    config.write_text(f'[storage]\npath = "{directory / "store"}"\n[server]\n{server}\n')
    return config


def token_file(directory: Path, token: str = TOKEN) -> Path:
    path = directory / "admin.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


# -- the admin token's length ----------------------------------------------------------------
def test_an_admin_token_shorter_than_32_characters_is_refused(tmp_path: Path) -> None:
    token = token_file(tmp_path, "t" * 31)
    config = write_config(
        tmp_path, f'listen = "127.0.0.1:{free_port()}"\nadmin_token_file = "{token}"'
    )
    both_refuse(tmp_path, config, f"server.admin_token_file {token}", "shorter than 32")
    assert "t" * 31 not in keyrotd_process(tmp_path, "--config", str(config), "run")[2]
    token_file(tmp_path, "t" * 32)
    assert check_config(config) == (0, "")


# -- the TLS private key's mode --------------------------------------------------------------
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o620])
def test_a_tls_key_others_can_read_or_the_group_can_write_is_refused(
    tmp_path: Path, mode: int
) -> None:
    ca = TestCA.make(tmp_path / "pki")
    ca.issue(0x1001)
    ca.key_file.chmod(mode)
    config = write_config(
        tmp_path,
        f'listen = "127.0.0.1:{free_port()}"\n'
        f'tls_cert_file = "{ca.cert_file}"\ntls_key_file = "{ca.key_file}"',
    )
    both_refuse(tmp_path, config, f"server.tls_key_file {ca.key_file}", f"(mode {mode:03o})")
    ca.key_file.chmod(0o640)
    assert check_config(config) == (0, "")


# -- admin endpoints over plain HTTP ---------------------------------------------------------
@pytest.mark.parametrize(
    ("server", "setting"),
    [
        ('listen = "0.0.0.0:{port}"\nadmin_token_file = "{token}"', "server.listen"),
        ('listen = "[::]:{port}"\nadmin_clients_file = "{clients}"', "server.listen"),
        ('listen = "192.0.2.1:{port}"\nadmin_token_file = "{token}"', "server.listen"),
        ('listen = "keyrotd.example:{port}"\nadmin_token_file = "{token}"', "server.listen"),
        ('admin_listen = "0.0.0.0:{port}"', "server.admin_listen"),
        ('admin_listen = "10.0.0.1:{port}"\nadmin_token_file = "{token}"', "server.admin_listen"),
    ],
)
def test_admin_endpoints_over_plain_http_off_loopback_are_refused(
    tmp_path: Path, server: str, setting: str
) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text("")
    clients.chmod(0o600)
    text = server.format(port=free_port(), token=token_file(tmp_path), clients=clients)
    config = write_config(tmp_path, text)
    both_refuse(tmp_path, config, setting, "plain HTTP", "insecure_admin")
    config.write_text(config.read_text() + "insecure_admin = true\n")
    assert check_config(config) == (0, "")


@pytest.mark.parametrize(
    "server",
    [
        'listen = "127.0.0.1:{port}"\nadmin_token_file = "{token}"',
        'listen = "127.3.2.1:{port}"\nadmin_token_file = "{token}"',
        'listen = "localhost:{port}"\nadmin_token_file = "{token}"',
        'listen = "[::1]:{port}"\nadmin_token_file = "{token}"',
        'listen = "0.0.0.0:{port}"',  # no admin endpoint
        'listen = "0.0.0.0:{port}"\nadmin_token_file = "{token}"\nadmin_listen = "unix:{sock}"',
        'listen = "0.0.0.0:{port}"\nadmin_token_file = "{token}"\nadmin_listen = "[::1]:1"',
    ],
)
def test_admin_endpoints_on_loopback_or_a_unix_socket_are_accepted(
    tmp_path: Path, server: str
) -> None:
    text = server.format(port=free_port(), token=token_file(tmp_path), sock=tmp_path / "a.sock")
    assert check_config(write_config(tmp_path, text)) == (0, "")


def test_admin_endpoints_over_https_off_loopback_are_accepted(tmp_path: Path) -> None:
    ca = TestCA.make(tmp_path / "pki")
    ca.issue(0x1001)
    config = write_config(
        tmp_path,
        f'listen = "0.0.0.0:{free_port()}"\nadmin_token_file = "{token_file(tmp_path)}"\n'
        f'tls_cert_file = "{ca.cert_file}"\ntls_key_file = "{ca.key_file}"',
    )
    assert check_config(config) == (0, "")


def all_interfaces(daemon: Daemon) -> None:
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace('"127.0.0.1:', '"0.0.0.0:'))


def test_insecure_admin_warns_at_every_start(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(server={"insecure_admin": True})
    all_interfaces(daemon)
    daemon.start()
    assert daemon.admin("GET", "/keysets/main/signing-key").status == 200
    daemon.stop()
    daemon.start()
    warnings = [e for e in daemon.log_events() if e.get("event") == "server.insecure_admin"]
    assert [e["level"] for e in warnings] == ["warning", "warning"]
    assert f"0.0.0.0:{daemon.port}" in warnings[0]["message"]


def test_a_reload_cannot_enable_admin_endpoints_over_plain_http_off_loopback(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(admin=False)
    all_interfaces(daemon)
    daemon.start()
    token = token_file(daemon.workdir)
    daemon.config.write_text(
        daemon.config.read_text().replace("[server]\n", f'[server]\nadmin_token_file = "{token}"\n')
    )
    daemon.send(signal.SIGHUP)
    wait_for(lambda: "configuration reload failed" in daemon.log_text(), 10, "refused reload")
    assert daemon.admin("GET", "/keysets/main/signing-key").status == 404
