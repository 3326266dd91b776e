"""G7: every ``kid`` is the RFC 7638 JWK thumbprint of its public key, computed here from the RFC.

The reference thumbprint below is written from RFC 7638 section 3 without joserfc: the JSON
object of the key type's required members only (section 3.2: RSA ``e kty n``, EC ``crv kty x y``,
OKP ``crv kty x`` per RFC 8037 section 2), members in lexicographic order, no whitespace, UTF-8;
its SHA-256 digest; base64url without padding.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from keyrotd.keys import PRIVATE_MEMBERS, generate_key, thumbprint
from keyrotd.lifecycle.commands import plan
from keyrotd.model import ALGORITHMS, Keyset, Policy

REQUIRED_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}

RFC_7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
    "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2Q"
    "vzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6We"
    "Zu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
"""The example of RFC 7638 section 3.1 (the RSA key of RFC 7517 appendix A.1)."""
RFC_7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def rfc7638(jwk: dict[str, str]) -> str:
    members = {name: jwk[name] for name in REQUIRED_MEMBERS[jwk["kty"]]}
    canonical = "{" + ",".join(f'"{k}":"{members[k]}"' for k in sorted(members)) + "}"
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def test_the_reference_computes_the_rfc_example() -> None:
    assert rfc7638(RFC_7638_KEY) == RFC_7638_THUMBPRINT
    # the canonical form is exactly the one of RFC 7638 section 3.1, modulo n
    members = {k: RFC_7638_KEY[k] for k in ("e", "kty", "n")}
    assert json.dumps(members, separators=(",", ":"), sort_keys=True) == (
        f'{{"e":"AQAB","kty":"RSA","n":"{RFC_7638_KEY["n"]}"}}'
    )


def test_thumbprint_of_the_rfc_example_ignores_alg_and_kid() -> None:
    assert thumbprint(RFC_7638_KEY) == RFC_7638_THUMBPRINT
    assert thumbprint({**RFC_7638_KEY, "use": "sig", "kid": "other"}) == RFC_7638_THUMBPRINT


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_kid_is_the_rfc_7638_thumbprint(alg: str) -> None:
    made = generate_key(alg)
    public = dict(made.public_jwk)
    assert made.kid == rfc7638(public) == thumbprint(public)
    assert not PRIVATE_MEMBERS & set(public)
    assert made.kid == rfc7638(dict(made.private_jwk))  # the same key: private members are ignored


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_served_jwk_has_its_thumbprint_as_kid_with_alg_and_use(alg: str) -> None:
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    policy = Policy(
        timedelta(days=1), timedelta(hours=12), timedelta(hours=1), timedelta(minutes=5)
    )
    first, second = generate_key(alg), generate_key(alg)
    keyset = plan(Keyset("default"), policy, start, fresh=(first,)).keyset
    keyset = plan(keyset, policy, start + timedelta(hours=12), fresh=(second,)).keyset
    served = keyset.jwks()["keys"]
    assert [jwk["kid"] for jwk in served] == [first.kid, second.kid]  # active, then pending
    for jwk in served:
        assert jwk["kid"] == rfc7638(dict(jwk))
        assert (jwk["alg"], jwk["use"]) == (alg, "sig")
