"""TLS on the listeners (docs/http.md): a CA made here, a real daemon, real HTTPS."""

from __future__ import annotations

import http.client
import ipaddress
import signal
import socket
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.daemon.tls import check_tls_pair
from keyrotd.errors import ConfigError
from tests.support.daemon import Daemon
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

MARKER = "MARKER-not-a-key-3b9f"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass
class TestCA:
    """A CA made at test time, issuing server certificates for 127.0.0.1 into ``directory``."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    __test__ = False

    @classmethod
    def make(cls, directory: Path) -> TestCA:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyrotd test CA")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, key, certificate)
        ca.file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return ca

    @property
    def file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "server.key"

    def issue(
        self, serial: int, *, key: PrivateKey | None = None, expired: bool = False
    ) -> PrivateKey:
        """Write a server certificate (and its key, unless ``key`` is given) to the files."""
        own = key or ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        end = now - timedelta(minutes=1) if expired else now + timedelta(days=1)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(own.public_key())
            .serial_number(serial)
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(end)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        chain = certificate.public_bytes(serialization.Encoding.PEM) + self.file.read_bytes()
        self.cert_file.write_bytes(chain)
        if key is None:
            self.write_key(own)
        return own

    def write_key(self, key: PrivateKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.key_file.write_bytes(pem)
        self.key_file.chmod(0o600)

    def server_settings(self) -> dict[str, object]:
        return {"tls_cert_file": self.cert_file, "tls_key_file": self.key_file}


def served_serial(port: int, ca_file: Path) -> int:
    """The serial of the certificate the listener on ``port`` presents (verified)."""
    context = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    ca = TestCA.make(tmp_path / "pki")
    ca.issue(0x1001)
    return ca


@pytest.fixture
def https_daemon(daemon_factory: DaemonFactory, ca: TestCA) -> Daemon:
    return daemon_factory(server=ca.server_settings(), ca_file=ca.file).start()


# -- serving ---------------------------------------------------------------------------------
def test_https_is_verified_against_the_ca_and_tls_1_2_is_enough(
    https_daemon: Daemon, ca: TestCA
) -> None:
    reply = https_daemon.get("/.well-known/jwks.json")
    assert reply.status == 200
    assert reply.json()["keys"][0]["alg"] == "ES256"
    context = ssl.create_default_context(cafile=ca.file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    url = f"https://127.0.0.1:{https_daemon.port}/.well-known/jwks.json"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        assert answer.status == 200
        assert answer.read() == reply.body
    assert served_serial(https_daemon.port, ca.file) == 0x1001
    https_daemon.stop()
    events = [e.get("event") for e in https_daemon.log_events()]
    assert events[-1] == "daemon.stopped"


def plain_http_answer(port: int) -> bytes:
    """What a plain HTTP request to ``port`` gets back (nothing, from a TLS listener)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            return plain.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return b""


def test_plain_http_to_the_https_listener_gets_no_http_answer(https_daemon: Daemon) -> None:
    assert not plain_http_answer(https_daemon.port).startswith(b"HTTP/")
    https_daemon.check_alive()


# -- renewal ---------------------------------------------------------------------------------
class Client(threading.Thread):
    """Loops JWKS requests over HTTPS (a new connection each) until stopped."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        self.target = daemon
        self.answered = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                status = self.target.get("/.well-known/jwks.json", timeout=5).status
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.answered += 1
            else:
                self.failures.append(f"HTTP {status}")

    def finish(self) -> None:
        self.done.set()
        self.join(10)


def test_sighup_serves_a_renewed_certificate_from_the_same_process(
    https_daemon: Daemon, ca: TestCA
) -> None:
    assert https_daemon.process is not None
    pid = https_daemon.process.pid
    client = Client(https_daemon)
    client.start()
    try:
        wait_for(lambda: client.answered >= 20, 20, "requests before the renewal")
        ca.issue(0x2002)
        https_daemon.send(signal.SIGHUP)
        wait_for(
            lambda: served_serial(https_daemon.port, ca.file) == 0x2002,
            2.0,
            "the renewed certificate",
            every=0.02,
        )
        before = client.answered
        wait_for(lambda: client.answered >= before + 20, 20, "requests after the renewal")
    finally:
        client.finish()
    assert client.failures == []
    assert https_daemon.process.pid == pid
    https_daemon.check_alive()
    renewed = [e for e in https_daemon.log_events() if e.get("event") == "tls.reloaded"]
    assert [e["listener"] for e in renewed] == ["public"]


def _mismatched(ca: TestCA) -> None:
    ca.issue(0x3003)
    ca.write_key(ec.generate_private_key(ec.SECP256R1()))


def _expired(ca: TestCA) -> None:
    ca.issue(0x3003, expired=True)


def _p521(ca: TestCA) -> None:  # OpenSSL takes it; keyrotd serves what every client takes
    key = ec.generate_private_key(ec.SECP521R1())
    ca.issue(0x3003, key=key)
    ca.write_key(key)


def _garbage_key(ca: TestCA) -> None:
    ca.issue(0x3003)
    ca.key_file.write_text(f"-----BEGIN PRIVATE KEY-----\n{MARKER}\n-----END PRIVATE KEY-----\n")


def _half_renewed(ca: TestCA) -> None:  # certbot wrote the certificate, not yet the key
    ca.issue(0x3003, key=ec.generate_private_key(ec.SECP256R1()))


BROKEN = {
    "mismatched key": _mismatched,
    "expired certificate": _expired,
    "P-521 key": _p521,
    "garbage key": _garbage_key,
    "half-renewed pair": _half_renewed,
}


@pytest.mark.parametrize("breakage", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_new_pair_is_refused_and_the_old_one_keeps_serving(
    https_daemon: Daemon, ca: TestCA, breakage: object
) -> None:
    assert callable(breakage)
    breakage(ca)
    https_daemon.send(signal.SIGHUP)
    wait_for(
        lambda: any(e.get("event") == "tls.reload_failed" for e in https_daemon.log_events()),
        20,
        "tls.reload_failed",
    )
    failed = [e for e in https_daemon.log_events() if e.get("event") == "tls.reload_failed"]
    assert len(failed) == 1
    assert failed[0]["listener"] == "public"
    assert "server.tls_" in failed[0]["error"]
    assert served_serial(https_daemon.port, ca.file) == 0x1001
    assert https_daemon.get("/.well-known/jwks.json").status == 200
    https_daemon.check_alive()
    assert MARKER not in https_daemon.log_text()
    # the files are fixed: the next SIGHUP serves them
    ca.issue(0x4004)
    https_daemon.send(signal.SIGHUP)
    wait_for(lambda: served_serial(https_daemon.port, ca.file) == 0x4004, 20, "the fixed pair")


def test_certificates_are_reread_when_the_new_configuration_is_refused(
    https_daemon: Daemon, ca: TestCA
) -> None:
    https_daemon.config.write_text(https_daemon.config.read_text() + "[server2]\n")
    ca.issue(0x5005)
    https_daemon.send(signal.SIGHUP)
    wait_for(lambda: served_serial(https_daemon.port, ca.file) == 0x5005, 20, "the new pair")
    assert "configuration reload failed" in https_daemon.log_text()


# -- refusals at start and in check-config ---------------------------------------------------
@pytest.mark.parametrize("breakage", [_expired, _garbage_key], ids=["expired", "garbage key"])
def test_run_refuses_a_broken_pair_with_one_line_and_exit_2(
    daemon_factory: DaemonFactory, ca: TestCA, breakage: object
) -> None:
    assert callable(breakage)
    breakage(ca)
    daemon = daemon_factory(server=ca.server_settings(), ca_file=ca.file).start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 2
    lines = daemon.log_text().strip().splitlines()
    assert len(lines) == 1
    assert "server.tls_" in lines[0]
    assert MARKER not in daemon.log_text()


def test_check_tls_pair_names_the_setting_file_and_cause(ca: TestCA, tmp_path: Path) -> None:
    cert, key = ca.cert_file, ca.key_file
    assert check_tls_pair(cert, key, datetime.now(UTC)).serial == 0x1001
    later = datetime.now(UTC) + timedelta(days=3)
    with pytest.raises(ConfigError, match=r"server\.tls_cert_file .*: the certificate expired"):
        check_tls_pair(cert, key, later)
    with pytest.raises(ConfigError, match=r"server\.tls_key_file .* does not exist"):
        check_tls_pair(cert, tmp_path / "missing.key", datetime.now(UTC))
    with pytest.raises(ConfigError, match=r"server\.tls_cert_file .* is not a PEM certificate"):
        check_tls_pair(key, key, datetime.now(UTC))
    _garbage_key(ca)
    with pytest.raises(ConfigError, match=r"server\.tls_key_file .* is not a PEM private key"):
        check_tls_pair(cert, key, datetime.now(UTC))
    _mismatched(ca)
    with pytest.raises(ConfigError, match="does not match the first certificate"):
        check_tls_pair(cert, key, datetime.now(UTC))
    _p521(ca)
    with pytest.raises(ConfigError, match="secp521r1 ECDSA key, which TLS cannot use"):
        check_tls_pair(cert, key, datetime.now(UTC))


def test_one_file_of_the_pair_alone_is_a_config_error_naming_both(tmp_path: Path) -> None:
    environ = {"KEYROTD_SERVER__TLS_KEY_FILE": str(tmp_path / "k.pem")}
    with pytest.raises(ConfigError) as raised:
        load_settings(None, environ)
    assert "tls_key_file is set without tls_cert_file" in str(raised.value)
    assert "server.tls_cert_file and server.tls_key_file" in str(raised.value)


def test_check_config_refuses_a_broken_pair_as_run_does(
    ca: TestCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[server]\ntls_cert_file = "{ca.cert_file}"\ntls_key_file = "{ca.key_file}"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 0
    _garbage_key(ca)
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "server.tls_key_file" in err
    assert MARKER not in err


def test_renewals_with_an_idle_kept_alive_client_and_then_a_prompt_stop(
    https_daemon: Daemon, ca: TestCA
) -> None:
    context = ssl.create_default_context(cafile=ca.file)
    idle = http.client.HTTPSConnection("127.0.0.1", https_daemon.port, timeout=5, context=context)
    try:
        idle.request("GET", "/healthz")
        assert idle.getresponse().read()  # the connection stays open, idle, on the old worker
        for serial in (0x6006, 0x7007):
            ca.issue(serial)
            https_daemon.send(signal.SIGHUP)
            wait_for(lambda s=serial: served_serial(https_daemon.port, ca.file) == s, 10, "renewal")
        started = time.monotonic()
        assert https_daemon.stop(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        idle.close()
