"""A real PostgreSQL server for the tests, from Debian's ``postgresql`` package (15).

``initdb`` and ``postgres`` refuse to run as root: run as root, the server runs as ``nobody``
(``setpriv``) in a temporary directory of its own (outside pytest's root-only tmp directory),
which nobody owns. It listens on a unix socket in that directory and on 127.0.0.1 at an
ephemeral port; TCP connections need the password (scram-sha-256), as keyrotd's DSN gives it.

:class:`PostgresServer` can be stopped and started again on the same port and data (the outage
drills), and serve TLS with a certificate of a test CA (:meth:`PostgresServer.with_tls`). The
session fixture ``postgres_server`` (tests/conftest.py) is shared; each test gets a database of
its own from :meth:`PostgresServer.new_database`. A second pytest-xdist worker starts its own.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest

from .daemon import free_port
from .process import stop_process
from .waiting import wait_for

BIN: Final = Path("/usr/lib/postgresql/15/bin")
PASSWORD: Final = "pw-SECRET-marker-7c1d"
USER: Final = "postgres"


def available() -> bool:
    return (BIN / "postgres").is_file()


def _as_server_user() -> list[str]:
    """setpriv execs the command itself (runuser forks and would not pass SIGINT on)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


@dataclass
class PostgresServer:
    """One ``postgres`` process on its own data directory (see the module docstring)."""

    root: Path
    port: int
    tls_ca: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    databases: int = 0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "server.log"

    @classmethod
    def make(cls, *, tls: bool = False) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="keyrotd-pg-"))
        root.chmod(0o755)
        server = cls(root, free_port())
        data = root / "data"
        data.mkdir(mode=0o700)
        (root / "pwfile").write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (root, data, root / "pwfile"):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        subprocess.run(
            [
                *_as_server_user(),
                str(BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={root / 'pwfile'}",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        if tls:
            server.tls_ca = make_tls_files(root)
            with open(data / "postgresql.conf", "a") as conf:
                conf.write(
                    f"ssl = on\nssl_cert_file = '{root / 'server.pem'}'\n"
                    f"ssl_key_file = '{root / 'server.key'}'\n"
                )
        server.start()
        return server

    def start(self) -> None:
        # log_statement=all on demand only: the benchmark counts queries with it
        command = [
            *_as_server_user(),
            str(BIN / "postgres"),
            "-D",
            str(self.root / "data"),
            "-k",
            str(self.root),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "shared_preload_libraries=pg_stat_statements",  # counts the queries keyrotd sends
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._accepts, 30, f"PostgreSQL on port {self.port} (log: {self.log})", 0.1)

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"postgres exited: {self.log.read_text()[-2000:]}")
        probe = subprocess.run(
            [str(BIN / "pg_isready"), "-h", str(self.root), "-p", str(self.port), "-q"],
            check=False,
        )
        return probe.returncode == 0

    def stop(self) -> None:
        """A fast shutdown: open connections are ended (as a server restart ends them)."""
        if self.process is None:
            return
        stop_process(self.process, signal.SIGINT, 30)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement through the unix socket (as the superuser); its unaligned output."""
        result = subprocess.run(
            [
                str(BIN / "psql"),
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def new_database(self) -> str:
        self.databases += 1
        name = f"test{self.databases}_{os.getpid()}"
        self.psql(f"CREATE DATABASE {name}")
        self.psql("CREATE EXTENSION pg_stat_statements", name)
        return name

    def statements(self, database: str) -> dict[str, tuple[int, int]]:
        """Per statement keyrotd sent to ``database`` since :meth:`forget_statements`: its
        calls and the rows it returned or changed (pg_stat_statements)."""
        out = self.psql(
            "SELECT query, calls, rows FROM pg_stat_statements s JOIN pg_database d"
            f" ON d.oid = s.dbid WHERE d.datname = '{database}'"
            " AND query NOT LIKE '%pg_stat_statements%'",
            database,
        )
        found: dict[str, tuple[int, int]] = {}
        for line in out.splitlines():
            query, calls, rows = line.rsplit("|", 2)
            found[query] = (int(calls), int(rows))
        return found

    def forget_statements(self, database: str) -> None:
        self.psql("SELECT pg_stat_statements_reset()", database)

    def dsn(self, database: str, **extra: str) -> str:
        params = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "dbname": database,
            "user": USER,
            "password": PASSWORD,
            **extra,
        }
        return " ".join(f"{key}={value}" for key, value in params.items())

    def dsn_file(self, directory: Path, database: str, **extra: str) -> Path:
        """A 0600 file holding the DSN, with surrounding whitespace as editors leave it."""
        path = directory / f"{database}.dsn"
        path.write_text("  " + self.dsn(database, **extra) + "\n\n")
        path.chmod(0o600)
        return path


def make_tls_files(root: Path) -> Path:
    """A test CA and a server certificate for 127.0.0.1 signed by it; the CA file's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyrotd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file = root / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    (root / "server.pem").write_bytes(certificate.public_bytes(pem))
    key_file = root / "server.key"
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (root / "server.pem", key_file):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return ca_file


def require_postgres() -> None:
    if not available():
        pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql)")
