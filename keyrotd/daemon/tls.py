"""The TLS pair of the listeners: checked before a listener loads it, served from private copies.

A pair that a listener cannot use must never replace one that works, and a renewal half done on
disk (certbot writes the certificate and the key one after the other) must never be loaded. So
nothing reaches the listeners unchecked:

- :func:`check_tls_pair` reads both files once, checks the bytes (PEM, a key type every TLS
  client takes: RSA 2048/3072/4096, ECDSA P-256/P-384, Ed25519,
  the key matching the first certificate, that certificate not expired at ``now``), then lets
  OpenSSL load the pair as a second opinion. A failure is a one-line :class:`ConfigError` naming
  the setting and the file; no text from a parser (which could quote the input) is ever shown.
- :class:`TlsCopies` writes the checked bytes to new files (0600) in a private 0700 directory:
  the listeners load only those, so a half-renewed pair on disk cannot reach them.

``keyrotd check-config`` calls :func:`check_tls_pair` too (README.md, Configuration).
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from keyrotd.errors import ConfigError
from keyrotd.secretfiles import load_tls_key

RSA_SIZES: Final = (2048, 3072, 4096)
EC_CURVES: Final = ("secp256r1", "secp384r1")
_KEY_TYPES: Final = "use an RSA (2048, 3072 or 4096 bits), ECDSA P-256/P-384 or Ed25519 key"
_KEPT_GENERATIONS: Final = 2


@dataclass(frozen=True)
class TlsPair:
    """A checked pair: the bytes read, and what the logs may say about it."""

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    serial: int
    not_after: datetime

    def describe(self) -> str:
        return f"serial {self.serial:x}, valid until {self.not_after:%Y-%m-%dT%H:%M:%SZ}"


def check_tls_pair(cert: Path, key: Path, now: datetime) -> TlsPair:
    """The pair in ``cert`` and ``key`` if a TLS listener can serve it at ``now``."""
    cert_where, key_where = f"server.tls_cert_file {cert}", f"server.tls_key_file {key}"
    cert_pem, key_pem = _read(cert_where, cert), load_tls_key(key)  # the secret-file rule
    leaf = _leaf_certificate(cert_where, cert_pem)
    private = _private_key(key_where, key_pem)
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ConfigError(
            f"{key_where} does not match the first certificate of {cert_where}",
            "give the key of that certificate (the chain starts with the server's certificate)",
        )
    not_after = leaf.not_valid_after_utc
    if not_after <= now:
        raise ConfigError(
            f"{cert_where}: the certificate expired at {not_after:%Y-%m-%dT%H:%M:%SZ}",
            "renew it (e.g. certbot renew), then reload keyrotd (SIGHUP)",
        )
    _openssl_accepts(cert_where, cert, key)
    return TlsPair(cert_pem, key_pem, leaf.serial_number, not_after)


def _read(where: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"{where} cannot be read ({reason})", "check the path and its permissions"
        ) from None


def _leaf_certificate(where: str, data: bytes) -> x509.Certificate:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        chain = []
    if not chain:
        raise ConfigError(
            f"{where} is not a PEM certificate chain",
            "give the PEM file that starts with -----BEGIN CERTIFICATE----- (e.g. fullchain.pem)",
        )
    return chain[0]


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _private_key(where: str, data: bytes) -> PrivateKey:
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:  # encrypted, and no password given
        raise ConfigError(
            f"{where} is encrypted", "give an unencrypted key file (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{where} is not a PEM private key",
            "give the PEM file that holds the certificate's key (e.g. privkey.pem)",
        ) from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size in RSA_SIZES:
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in EC_CURVES:
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(f"{where} holds a {_key_kind(key)} key, which TLS cannot use", _KEY_TYPES)


def _key_kind(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return f"{key.key_size}-bit RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{key.curve.name} ECDSA"
    return type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "unknown"


def _no_password() -> bytes:
    return b""  # never prompt on a terminal: an encrypted key simply fails


def _openssl_accepts(where: str, cert: Path, key: Path) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, _no_password)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ConfigError(
            f"{where}: OpenSSL refuses the pair ({reason})",
            "check that the certificate and key are a current, matching pair",
        ) from None


class TlsCopies:
    """The files the listeners load: private copies of the last pair that passed the checks.

    Every :meth:`install` writes new files (never rewriting one a worker may be reading) and
    removes the older ones; :meth:`close` removes the directory.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="keyrotd-tls-"))  # mode 0700
        self._generation = 0
        self._lock = threading.Lock()
        self.pair: TlsPair | None = None

    def install(self, pair: TlsPair) -> tuple[Path, Path]:
        """Write ``pair``; the paths of its copies (cert, key)."""
        with self._lock:
            self._generation += 1
            cert, key = self.paths(self._generation)
            _write_private(cert, pair.cert_pem)
            _write_private(key, pair.key_pem)
            old = self._generation - _KEPT_GENERATIONS
            if old > 0:
                for path in self.paths(old):
                    path.unlink(missing_ok=True)
            self.pair = pair
            return cert, key

    def paths(self, generation: int) -> tuple[Path, Path]:
        return (
            self.directory / f"cert-{generation}.pem",
            self.directory / f"key-{generation}.pem",
        )

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


def tls_refused(exc: ssl.SSLError) -> ConfigError:
    """OpenSSL's load of the (already checked) copies failed: say why, in one line."""
    return ConfigError(
        f"the TLS pair (server.tls_cert_file, server.tls_key_file) is refused by OpenSSL "
        f"({exc.reason or type(exc).__name__})",
        "check that the certificate and key are a current, matching pair",
    )
