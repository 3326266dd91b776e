"""Signing-key generation for the ten supported algorithms.

Keys are generated with ``cryptography`` and exported as JWKs by joserfc. The ``kid`` of every key
is :func:`thumbprint`, the RFC 7638 JWK thumbprint (SHA-256, base64url) of its public key (G7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyrotd.errors import ConfigError
from keyrotd.model import ALGORITHMS, Jwk

if TYPE_CHECKING:
    from joserfc.jwk import ECKey, OKPKey, RSAKey

RSA_KEY_SIZES: Final = (2048, 3072, 4096)
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})

_CURVES: Final[dict[str, Callable[[], ec.EllipticCurve]]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


@dataclass(frozen=True)
class NewKey:
    """A freshly generated keypair as JWKs; the private JWK never shows in ``repr``. A key made
    in custody has no private JWK here, only the ``handle`` that finds it there."""

    kid: str
    alg: str
    public_jwk: Jwk
    private_jwk: Jwk | None = field(repr=False)
    handle: str | None = None


def generate_key(alg: str, rsa_key_size: int = 2048) -> NewKey:
    """Generate a keypair for ``alg``; ``rsa_key_size`` applies to RS* and PS*."""
    from joserfc.jwk import ECKey, OKPKey, RSAKey  # not at import: ``status`` makes no key

    jwk: RSAKey | ECKey | OKPKey
    if alg.startswith(("RS", "PS")) and alg in ALGORITHMS:
        if rsa_key_size not in RSA_KEY_SIZES:
            raise ConfigError(
                f"rsa_key_size {rsa_key_size} is not allowed", "use 2048, 3072 or 4096"
            )
        jwk = RSAKey.import_key(rsa.generate_private_key(65537, rsa_key_size))
    elif alg in _CURVES:
        jwk = ECKey.import_key(ec.generate_private_key(_CURVES[alg]()))
    elif alg == "EdDSA":
        jwk = OKPKey.import_key(ed25519.Ed25519PrivateKey.generate())
    else:
        raise ConfigError(f"unknown algorithm {alg!r}", f"use one of {', '.join(ALGORITHMS)}")
    private = {k: str(v) for k, v in jwk.as_dict(private=True).items()}
    public = {k: v for k, v in private.items() if k not in PRIVATE_MEMBERS}
    return NewKey(kid=thumbprint(public), alg=alg, public_jwk=public, private_jwk=private)


def thumbprint(jwk: Jwk) -> str:
    """The RFC 7638 SHA-256 thumbprint of a JWK: the one thing that computes kids.

    Only the key type's required public members count (RFC 7638 section 3.2), so ``kid``,
    ``alg``, ``use`` and private members change nothing.
    """
    from joserfc.jwk import JWKRegistry

    members = {k: v for k, v in jwk.items() if k not in PRIVATE_MEMBERS | {"kid", "alg", "use"}}
    return JWKRegistry.import_key(dict(members)).thumbprint()
