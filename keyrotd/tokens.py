"""Compact JWS, the one way keyrotd signs and checks tokens (the issuer client and ``inspect``).

Signatures go through joserfc's algorithm models (``JWSRegistry.algorithms``) rather than
``joserfc.jwt.encode``: the registry lookup behind ``encode`` warns that EdDSA is deprecated (RFC
9864) on every call, and silencing that with ``warnings.catch_warnings`` is not thread-safe, while
issuers sign from many threads. The models are the same code ``encode`` ends up calling.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from keyrotd.errors import KeyrotdError
from keyrotd.model import ALGORITHMS, Jwk

if TYPE_CHECKING:
    from joserfc.jwk import Key

# joserfc is imported by the functions that sign or verify, not with this module: the token
# parsing here serves ``keyrotd status`` too, whose start-up should not pay for it
# (tests/test_cli_startup.py).

_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class KeyImportError(KeyrotdError):
    """A JWK that cannot sign or verify with its algorithm."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 section 2); anything else raises ``ValueError``."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def json_part(data: Mapping[str, Any]) -> str:
    """A header or payload as compact JSON, base64url-encoded."""
    return b64url_encode(json.dumps(data, separators=(",", ":")).encode("utf-8"))


def import_key(jwk: Jwk | Mapping[str, Any], alg: str) -> Key:
    """The joserfc key for ``jwk``, checked to be usable with ``alg`` (key type, curve, ``use``)."""
    if alg not in ALGORITHMS:
        raise KeyImportError(f"algorithm {alg!r} is not one keyrotd signs with")
    from joserfc.errors import JoseError
    from joserfc.jwk import JWKRegistry
    from joserfc.jws import JWSRegistry

    try:
        key = JWKRegistry.import_key(dict(jwk))
        JWSRegistry.algorithms[alg].check_key(key)
    except Exception as exc:  # a JWK from a JWKS is untrusted input: any failure means unusable
        reason = exc if isinstance(exc, JoseError | ValueError) else type(exc).__name__
        raise KeyImportError(f"the key cannot be used with {alg}: {reason}") from None
    return key


def sign_compact(header: Mapping[str, Any], claims: Mapping[str, Any], key: Key) -> str:
    """``header.payload.signature``; ``header["alg"]`` names the algorithm, ``key`` is private."""
    from joserfc.jws import JWSRegistry

    signing_input = f"{json_part(header)}.{json_part(claims)}"
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url_encode(signature)}"


def verify_signature(signing_input: bytes, signature: bytes, alg: str, key: Key) -> bool:
    """Whether ``signature`` is ``alg``'s signature of ``signing_input`` under ``key``."""
    from joserfc.errors import JoseError
    from joserfc.jws import JWSRegistry

    try:
        return JWSRegistry.algorithms[alg].verify(signing_input, signature, key)
    except (JoseError, ValueError, TypeError):  # e.g. a signature of the wrong length
        return False


class MalformedTokenError(ValueError):
    """A string that is not a compact JWS with JSON-object header and payload."""


@dataclass(frozen=True)
class Compact:
    """A compact JWS taken apart; nothing is verified yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_compact(token: str) -> Compact:
    """Split and decode ``header.payload.signature``; raise :class:`MalformedTokenError` saying
    what is wrong."""
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedTokenError(f"expected 3 dot-separated parts, found {len(parts)}")
    decoded: list[bytes] = []
    for name, part in zip(("header", "payload", "signature"), parts, strict=True):
        try:
            decoded.append(b64url_decode(part))
        except ValueError:
            raise MalformedTokenError(f"the {name} is not base64url") from None
    return Compact(
        header=_json_object(decoded[0], "header"),
        claims=_json_object(decoded[1], "payload"),
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=decoded[2],
    )


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:
        reason = exc if isinstance(exc, MalformedTokenError) else "not JSON"
        raise MalformedTokenError(f"the {name} is {reason}") from None
    if not isinstance(value, dict):
        raise MalformedTokenError(f"the {name} is JSON but not an object")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise MalformedTokenError("JSON with a duplicate member (ambiguous)")
    return members


def _no_constant(name: str) -> None:
    raise MalformedTokenError(f"not standard JSON ({name})")
