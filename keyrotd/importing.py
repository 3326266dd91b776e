"""Reading a key made elsewhere for ``keyrotd import`` (docs/cli.md): a PEM file (private key,
PKCS#8 or traditional, or a public key) or a JWK (private or public), checked against the
keyset's algorithm and exported as keyrotd's own keys are (``keyrotd.keys``): the kid is the
RFC 7638 thumbprint, whatever ``kid`` the file states.

Every failure is one :class:`KeyrotdError` naming the file and never quoting its content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from keyrotd.errors import KeyrotdError
from keyrotd.keys import PRIVATE_MEMBERS, RSA_KEY_SIZES, thumbprint
from keyrotd.model import Jwk
from keyrotd.tokens import KeyImportError, import_key

MAX_FILE: Final = 1024 * 1024


@dataclass(frozen=True)
class ImportedKey:
    """A key read from a file: public JWK, private JWK (None for a public key) and the kid the
    file stated, if any; the private JWK never shows in ``repr``."""

    kid: str
    alg: str
    public_jwk: Jwk
    private_jwk: Jwk | None = field(repr=False)
    stated_kid: str | None = None


def read_key_file(path: Path, alg: str) -> ImportedKey:
    """The key in ``path`` for a keyset signing with ``alg`` (see the module docstring)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE + 1)
    except OSError as exc:
        raise KeyrotdError(
            f"cannot read {path} ({exc.strerror or type(exc).__name__})",
            "give the path of a PEM or JWK file keyrotd may read",
        ) from None
    if len(data) > MAX_FILE:
        raise KeyrotdError(f"{path} is larger than 1 MiB", "give one key, as PEM or a JWK")
    stated: str | None = None
    if data.lstrip().startswith(b"{"):
        key, stated = _from_jwk(path, data, alg)
    else:
        key = _from_pem(path, data)
    jwk = _exported(path, key)
    private = {k: str(v) for k, v in jwk.as_dict(private=jwk.is_private).items()}
    public = {k: v for k, v in private.items() if k not in PRIVATE_MEMBERS}
    try:
        import_key(public, alg)
    except KeyImportError as exc:
        raise KeyrotdError(
            f"{path}: not a key for the keyset's algorithm ({exc.message})",
            f"import a key made for {alg}, or into a keyset with that key's algorithm",
        ) from None
    rsa_key = isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey)
    if rsa_key and key.key_size < RSA_KEY_SIZES[0]:
        raise KeyrotdError(
            f"{path}: an RSA key of {key.key_size} bits is too weak",
            "import a key of 2048 bits or more",
        )
    return ImportedKey(
        kid=thumbprint(public),
        alg=alg,
        public_jwk=public,
        private_jwk=private if jwk.is_private else None,
        stated_kid=stated,
    )


def _from_pem(path: Path, data: bytes) -> Any:
    private: Any = None
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyrotdError(
            f"{path}: the PEM private key is encrypted",
            "decrypt it to a file only you can read first (openssl pkey -in F -out G)",
        ) from None
    except Exception:  # not a private key (or one of a type cryptography cannot load)
        private = None
    if private is not None:
        return private
    try:
        return serialization.load_pem_public_key(data)
    except Exception:
        raise KeyrotdError(
            f"{path}: not a PEM private or public key, nor a JWK",
            "give a PEM file (BEGIN PRIVATE KEY, BEGIN EC PRIVATE KEY, BEGIN PUBLIC KEY, ...) or "
            "a JWK as JSON",
        ) from None


def _from_jwk(path: Path, data: bytes, alg: str) -> tuple[Any, str | None]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise KeyrotdError(f"{path}: not a JWK (not a JSON object)", "give one JWK as JSON")
    try:
        key = JWKRegistry.import_key(value)
    except Exception:  # untrusted input: any failure means not a usable JWK
        raise KeyrotdError(
            f"{path}: not a usable JWK (a member is missing or wrong)",
            "give an RSA, EC or OKP (Ed25519) JWK with all its members",
        ) from None
    if value.get("alg", alg) != alg or value.get("use", "sig") != "sig":
        raise KeyrotdError(
            f"{path}: the JWK is for {value.get('alg', alg)} (use {value.get('use', 'sig')}), "
            f"not for signing with {alg}",
            f"import a key made for {alg}, or into a keyset with that key's algorithm",
        )
    stated = value.get("kid")
    return key.raw_value, stated if isinstance(stated, str) else None


def _exported(path: Path, key: Any) -> RSAKey | ECKey | OKPKey:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return RSAKey.import_key(key)
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return ECKey.import_key(key)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return OKPKey.import_key(key)
    raise KeyrotdError(
        f"{path}: a key type keyrotd does not sign with",
        "import an RSA, EC (P-256, P-384, P-521) or Ed25519 key",
    )
