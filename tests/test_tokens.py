"""Compact JWS (``keyrotd.tokens``): tokens keyrotd signs verify with PyJWT as well as ours, a
changed token does not, and malformed tokens and unusable keys are refused saying why."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from keyrotd.keys import generate_key
from keyrotd.model import ALGORITHMS
from keyrotd.tokens import (
    KeyImportError,
    MalformedTokenError,
    b64url_decode,
    b64url_encode,
    import_key,
    json_part,
    parse_compact,
    sign_compact,
    verify_signature,
)

CLAIMS = {"sub": "alice", "iss": "https://issuer.example", "iat": 1767261600, "n": [1, "é"]}
PYJWT_OPTIONS = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}


def signed(alg: str) -> tuple[str, dict[str, str]]:
    """A token signed with a fresh key of ``alg``, and the public JWK (with kid and alg)."""
    made = generate_key(alg)
    private = import_key({**made.private_jwk, "kid": made.kid, "alg": alg}, alg)
    token = sign_compact({"alg": alg, "typ": "JWT", "kid": made.kid}, CLAIMS, private)
    return token, {**made.public_jwk, "kid": made.kid, "alg": alg}


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_signed_token_verifies_with_pyjwt_and_with_ours(alg: str) -> None:
    token, public = signed(alg)
    decoded = jwt.decode(token, jwt.PyJWK(public).key, algorithms=[alg], options=PYJWT_OPTIONS)
    assert decoded == CLAIMS
    assert jwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT", "kid": public["kid"]}
    parts = parse_compact(token)
    assert parts.header["kid"] == public["kid"] and parts.claims == CLAIMS
    assert verify_signature(parts.signing_input, parts.signature, alg, import_key(public, alg))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_a_changed_payload_or_another_key_fails_verification(alg: str) -> None:
    token, public = signed(alg)
    _, other = signed(alg)
    header, _, signature = token.split(".")
    forged = f"{header}.{json_part({**CLAIMS, 'sub': 'mallory'})}.{signature}"
    parts = parse_compact(forged)
    assert not verify_signature(parts.signing_input, parts.signature, alg, import_key(public, alg))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, jwt.PyJWK(public).key, algorithms=[alg], options=PYJWT_OPTIONS)
    genuine = parse_compact(token)
    key = import_key(other, alg)
    assert not verify_signature(genuine.signing_input, genuine.signature, alg, key)
    assert not verify_signature(genuine.signing_input, b"short", alg, import_key(public, alg))


def test_base64url_is_unpadded_and_strict() -> None:
    for data in (b"", b"f", b"fo", b"foo", b"\xfb\xff\xfe"):
        text = b64url_encode(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64url_decode(text) == data
    for bad in ("Zm9v=", "Zm+v", "Zm/v", "Zm9vY", "Zm 9v"):
        with pytest.raises(ValueError, match="not unpadded base64url"):
            b64url_decode(bad)


def part(value: Any) -> str:
    return b64url_encode(value if isinstance(value, bytes) else json.dumps(value).encode())


GOOD_HEADER = part({"alg": "ES256"})
GOOD_PAYLOAD = part({"sub": "a"})
DUPLICATE = part(b'{"a":1,"a":2}')
NAN = part(b'{"n":NaN}')
NOT_UTF8 = part(b"\xff\xfe")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("a.b", "expected 3 dot-separated parts, found 2"),
        ("a.b.c.d", "expected 3 dot-separated parts, found 4"),
        (f"{GOOD_HEADER}.{GOOD_PAYLOAD}.sig=", "the signature is not base64url"),
        (f"!.{GOOD_PAYLOAD}.c2ln", "the header is not base64url"),
        (f"{part(b'{nope')}.{GOOD_PAYLOAD}.c2ln", "the header is not JSON"),
        (f"{GOOD_HEADER}.{part([1, 2])}.c2ln", "the payload is JSON but not an object"),
        (f"{DUPLICATE}.{GOOD_PAYLOAD}.c2ln", "JSON with a duplicate member"),
        (f"{GOOD_HEADER}.{NAN}.c2ln", "not standard JSON (NaN)"),
        (f"{GOOD_HEADER}.{NOT_UTF8}.c2ln", "the payload is not JSON"),
    ],
)
def test_a_malformed_token_is_refused_saying_what_is_wrong(token: str, reason: str) -> None:
    with pytest.raises(MalformedTokenError) as raised:
        parse_compact(token)
    assert reason in str(raised.value)


def test_a_key_of_the_wrong_type_or_algorithm_is_refused_without_echoing_it() -> None:
    ec = generate_key("ES256")
    with pytest.raises(KeyImportError, match=r"^the key cannot be used with RS256: ") as raised:
        import_key(ec.private_jwk, "RS256")
    assert ec.private_jwk["d"] not in str(raised.value)
    with pytest.raises(KeyImportError, match=r"^the key cannot be used with ES384: "):
        import_key(ec.public_jwk, "ES384")  # a P-256 key for a P-384 algorithm
    with pytest.raises(KeyImportError, match=r"^algorithm 'HS256' is not one keyrotd signs with$"):
        import_key(ec.public_jwk, "HS256")
    with pytest.raises(KeyImportError, match=r"^the key cannot be used with ES256: "):
        import_key({"kty": "EC", "crv": "P-256", "x": "AAAA"}, "ES256")
