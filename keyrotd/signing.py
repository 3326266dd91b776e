"""Tokens signed by keyrotd itself: the signing API (docs/http.md), ``keyrotd sign`` and the remote
issuer (docs/issuers.md) share these rules.

keyrotd owns the header (``alg``, ``kid``, ``typ``), ``iat``, ``exp`` and, when the keyset has an
``issuer`` and the claims carry no ``iss``, ``iss``. A request is refused (:class:`SignRefused`:
HTTP 400, exit 2) when it is not a JSON object with ``claims``, when the claims are not a JSON
object or carry ``iat`` or ``exp``, when their ``iss`` differs from the keyset's ``issuer``, and
when ``lifetime`` is not a whole number of seconds from 1 to ``token_lifetime``. Pure: the time
and the signing key are passed in; nothing here reads storage or the clock.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from keyrotd.errors import KeyrotdError
from keyrotd.times import rfc3339
from keyrotd.tokens import b64url_encode, json_part

OWNED: Final = frozenset({"iat", "exp"})
"""Claims keyrotd sets itself."""
_MEMBERS: Final = frozenset({"claims", "lifetime", "typ"})


class SignRefused(KeyrotdError):
    """A sign request keyrotd will not sign (HTTP 400; exit 2 from the command line)."""

    exit_code = 2


class SigningKey(Protocol):
    """The key that signs: its kid and algorithm, and its signature of JWS signing input in
    JOSE's format (``keyrotd.issuer_sources.Signer`` in memory, ``keyrotd.custody.CustodySigner`` in
    a token or KMS)."""

    @property
    def kid(self) -> str: ...
    @property
    def alg(self) -> str: ...
    def sign(self, signing_input: bytes) -> bytes: ...


@dataclass(frozen=True)
class SignRequest:
    """What a caller asks to have signed."""

    claims: dict[str, Any]
    lifetime: int | None = None
    typ: str = "JWT"


@dataclass(frozen=True)
class Signed:
    token: str
    kid: str
    expires_at: datetime


def parse_request(body: bytes) -> SignRequest:
    """The JSON body of ``POST .../sign``; :class:`SignRefused` saying what is wrong."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads does
        data = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise SignRefused("the body is not JSON", 'send {"claims": {...}}') from None
    if not isinstance(data, dict):
        raise SignRefused("the body is not a JSON object", 'send {"claims": {...}}')
    unknown = sorted(set(data) - _MEMBERS)
    if unknown:
        raise SignRefused(
            f"unknown member {', '.join(unknown)} in the body",
            "send only claims, lifetime and typ",
        )
    if "claims" not in data:
        raise SignRefused("the body has no claims", 'send {"claims": {...}}')
    lifetime = data.get("lifetime")
    if lifetime is not None and (isinstance(lifetime, bool) or not isinstance(lifetime, int)):
        raise SignRefused("lifetime is not a whole number of seconds", "send e.g. 300")
    typ = data.get("typ", "JWT")
    return SignRequest(claims=_claims(data["claims"]), lifetime=lifetime, typ=_typ(typ))


def _no_constant(name: str) -> None:
    raise ValueError(f"not standard JSON ({name})")


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)
"""One decoder for every request (``json.loads`` with an option makes one per call)."""


@functools.lru_cache(maxsize=64)
def _header_part(alg: str, kid: str, typ: str) -> str:
    """The encoded header: the same for every token of one key and ``typ``."""
    return json_part({"alg": alg, "kid": kid, "typ": typ})


def request_of(claims: object, lifetime: int | None = None, typ: object = "JWT") -> SignRequest:
    """A request from values already parsed (the command line, the Python API)."""
    return SignRequest(claims=_claims(claims), lifetime=lifetime, typ=_typ(typ))


def _claims(claims: object) -> dict[str, Any]:
    if not isinstance(claims, dict):
        raise SignRefused("claims is not a JSON object", 'send claims as {"sub": ..., ...}')
    return claims


def _typ(typ: object) -> str:
    if not isinstance(typ, str) or not typ or len(typ) > 100 or not typ.isprintable():
        raise SignRefused("typ is not a short text", 'send e.g. "JWT" or "at+jwt"')
    return typ


def sign(
    request: SignRequest,
    signer: SigningKey,
    *,
    now: datetime,
    token_lifetime: timedelta,
    issuer: str = "",
) -> Signed:
    """The token of ``request`` signed by ``signer`` at ``now`` (see the module docstring)."""
    claims = request.claims
    owned = sorted(OWNED & claims.keys())
    if owned:
        raise SignRefused(
            f"the claims carry {' and '.join(owned)}, which keyrotd sets",
            "leave them out; ask for a lifetime instead",
        )
    longest = math.floor(token_lifetime.total_seconds())
    lifetime = longest if request.lifetime is None else request.lifetime
    if not 1 <= lifetime <= longest:
        raise SignRefused(
            f"lifetime {lifetime} is not from 1 to the keyset's token_lifetime ({longest} s)",
            "ask for a shorter lifetime, or raise token_lifetime in the keyset's configuration",
        )
    payload = dict(claims)
    if issuer:
        given = payload.setdefault("iss", issuer)
        if given != issuer:
            raise SignRefused(
                "the claims' iss differs from the keyset's issuer",
                f"leave iss out (keyrotd sets {issuer}) or send that value",
            )
    issued_at = math.floor(now.timestamp())
    payload["iat"] = issued_at
    payload["exp"] = issued_at + lifetime
    try:
        signing_input = f"{_header_part(signer.alg, signer.kid, request.typ)}.{json_part(payload)}"
    except (TypeError, ValueError) as exc:  # e.g. a float NaN in the claims
        raise SignRefused(f"the claims cannot be encoded ({exc})", "use JSON values") from None
    signature = signer.sign(signing_input.encode("ascii"))
    token = f"{signing_input}.{b64url_encode(signature)}"
    return Signed(token, signer.kid, datetime.fromtimestamp(issued_at + lifetime, UTC))


def answer_of(signed: Signed) -> dict[str, str]:
    """The JSON of a ``POST .../sign`` answer."""
    return {"token": signed.token, "kid": signed.kid, "expires_at": rfc3339(signed.expires_at)}
