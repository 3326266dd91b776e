"""How many keys a policy keeps in a JWKS at once, and how large its largest document grows.

A key stays in the JWKS from its publication (``publish_ahead`` before it signs) until
``token_lifetime + clock_skew`` after it stops signing, and a new one signs every
``rotation_period``: about ``(publish_ahead + token_lifetime + clock_skew) / rotation_period + 2``
keys at once. Above :data:`MANY_KEYS` ``run`` and ``check-config`` warn (verifiers fetch and scan
them all); a policy whose largest document would not fit its storage is refused.

The document estimate serializes a real keyset document (:func:`keyrotd.model.to_json`) whose
JWKs have the exact member sizes of the algorithm's keys (RFC 7518 fixes them: an RSA modulus of
``rsa_key_size`` bits, EC coordinates of the curve's size), with two private keys (active and
pending), the rest retired and public only, and a full history; tests/test_capacity.py checks it
against the documents a real writer stores.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from keyrotd.model import HISTORY_LIMIT, Jwk, Key, Keyset, KeyState, to_json

if TYPE_CHECKING:
    from keyrotd.config.models import KeysetSettings

MANY_KEYS: Final = 20
"""Above this many keys in a JWKS at once, ``run`` and ``check-config`` warn."""

_CURVE_BYTES: Final = {"ES256": ("P-256", 32), "ES384": ("P-384", 48), "ES512": ("P-521", 66)}
_SOME_TIME: Final = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Capacity:
    """A keyset's keys in its JWKS at once and its largest document, in bytes."""

    keys: int
    document_bytes: int


def keys_in_jwks(keyset: KeysetSettings) -> int:
    """About how many keys the keyset's JWKS holds at once, at most."""
    live = keyset.publish_ahead + keyset.token_lifetime + keyset.clock_skew
    return math.floor(live / keyset.rotation_period) + 2


def capacity(keyset: KeysetSettings) -> Capacity:
    """The keys at once and the estimated size of the largest document of ``keyset``."""
    count = keys_in_jwks(keyset)
    two, three = (_document_bytes(keyset.algorithm, keyset.rsa_key_size, live) for live in (2, 3))
    return Capacity(count, len(keyset.name) + two + (count - 2) * (three - two))


@functools.cache
def _document_bytes(algorithm: str, rsa_key_size: int, live: int) -> int:
    """The document of ``live`` keys, for a keyset whose name is empty (cached: thousands of
    keysets share a few algorithms)."""
    public, private = _jwks_of(algorithm, rsa_key_size)
    kid = "k" * 43  # an RFC 7638 SHA-256 thumbprint, base64url

    def key(state: KeyState, with_private: bool, with_public: bool = True) -> Key:
        return Key(
            kid=kid,
            alg=algorithm,
            state=state,
            created_at=_SOME_TIME,
            activates_at=_SOME_TIME,
            retired_at=_SOME_TIME,
            expires_at=_SOME_TIME,
            revoked_at=None,
            public_jwk=public if with_public else None,
            private_jwk=private if with_private else None,
        )

    keys = (
        key(KeyState.ACTIVE, True),
        key(KeyState.PENDING, True),
        *(key(KeyState.RETIRED, False) for _ in range(live - 2)),
    )
    history = tuple(key(KeyState.EXPIRED, False, False) for _ in range(HISTORY_LIMIT))
    return len(to_json(Keyset("", keys, history, updated_at=_SOME_TIME)))


def _jwks_of(algorithm: str, rsa_key_size: int) -> tuple[Jwk, Jwk]:
    """A public and a private JWK with the member sizes of a real key of ``algorithm``."""
    if algorithm in _CURVE_BYTES:
        curve, size = _CURVE_BYTES[algorithm]
        public = {"crv": curve, "x": _b64(size), "y": _b64(size), "kty": "EC"}
        return public, {**public, "d": _b64(size)}
    if algorithm == "EdDSA":
        public = {"crv": "Ed25519", "x": _b64(32), "kty": "OKP"}
        return public, {**public, "d": _b64(32)}
    modulus, half = rsa_key_size // 8, rsa_key_size // 16
    public = {"n": _b64(modulus), "e": "AQAB", "kty": "RSA"}
    private = {"d": _b64(modulus), **{m: _b64(half) for m in ("p", "q", "dp", "dq", "qi")}}
    return public, {**public, **private}


def _b64(size: int) -> str:
    """A base64url text (no padding) as long as the encoding of ``size`` bytes."""
    return "A" * math.ceil(size * 4 / 3)
