"""PKCS#11 custody on a real SoftHSM2 token: every algorithm, non-extractable keys, tokens that
PyJWT verifies with the public JWK alone, destruction, and objects keyrotd did not make."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from keyrotd.custody.interface import CustodyKeyGoneError, CustodyUnavailableError
from keyrotd.custody.pkcs11 import Pkcs11Custody
from keyrotd.keys import PRIVATE_MEMBERS, thumbprint
from keyrotd.model import ALGORITHMS
from tests.support.clock import T0_DECEMBER as T0
from tests.support.softhsm import SoftHsm


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(
    custody: Pkcs11Custody, handle: str, kid: str, alg: str, claims: dict[str, object]
) -> str:
    header = _b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{_b64(custody.sign(handle, alg, signing_input))}"


def _inspect(hsm: SoftHsm) -> Any:
    """A session of the test's own on the token (sharing the process's login, if any)."""
    token = pkcs11.lib(str(hsm.module)).get_token(token_label=hsm.label)
    try:
        return token.open(user_pin=hsm.pin, rw=True)
    except pkcs11.exceptions.UserAlreadyLoggedIn:
        return token.open(rw=True)


def _custody(hsm: SoftHsm) -> Pkcs11Custody:
    return Pkcs11Custody(hsm.module, hsm.label, hsm.pin)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_signs_tokens_pyjwt_verifies_with_the_public_jwk(
    softhsm: SoftHsm, alg: str
) -> None:
    custody = _custody(softhsm)
    key = custody.create("api", alg, 2048, T0)
    assert key.kid == thumbprint(key.public_jwk)
    assert not PRIVATE_MEMBERS & set(key.public_jwk)
    assert (key.public_jwk["alg"], key.public_jwk["use"]) == (alg, "sig")
    token = _token(custody, key.handle, key.kid, alg, {"sub": "alice", "aud": "api"})
    public = jwt.PyJWK(dict(key.public_jwk), algorithm=alg)
    claims = jwt.decode(token, public.key, algorithms=[alg], audience="api")
    assert claims["sub"] == "alice"
    # a second custody object (another process) finds the key by its kid alone
    other = _custody(softhsm)
    again = _token(other, key.handle, key.kid, alg, {"sub": "bob", "aud": "api"})
    assert jwt.decode(again, public.key, algorithms=[alg], audience="api")["sub"] == "bob"
    custody.close()
    other.close()


def test_private_objects_are_sensitive_and_never_extractable(softhsm: SoftHsm) -> None:
    custody = _custody(softhsm)
    key = custody.create("api", "ES256", 2048, T0)
    with _inspect(softhsm) as session:
        (private,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: key.kid.encode()}
        )
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.TOKEN] is True
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[Attribute.VALUE]
    custody.close()


def test_destroy_removes_both_halves_and_signing_then_says_the_key_is_gone(
    softhsm: SoftHsm,
) -> None:
    custody = _custody(softhsm)
    kept = custody.create("api", "ES256", 2048, T0)
    gone = custody.create("api", "RS256", 2048, T0)
    custody.destroy(gone.handle)
    custody.destroy(gone.handle)  # idempotent
    with _inspect(softhsm) as session:
        assert list(session.get_objects({Attribute.ID: gone.kid.encode()})) == []
        assert len(list(session.get_objects({Attribute.ID: kept.kid.encode()}))) == 2
    with pytest.raises(CustodyKeyGoneError, match="read storage again"):
        custody.sign(gone.handle, "RS256", b"x.y")
    assert [k.kid for k in custody.held("api")] == [kept.kid]
    custody.close()


def test_held_lists_this_keysets_keys_with_their_creation_time_and_nothing_foreign(
    softhsm: SoftHsm,
) -> None:
    custody = _custody(softhsm)
    first = custody.create("api", "ES256", 2048, T0)
    custody.create("web", "ES256", 2048, T0)
    with _inspect(softhsm) as session:
        # an object another application made, under a kid-like id: never listed, never destroyed
        session.generate_keypair(
            KeyType.RSA, 2048, store=True, label="someone-else", id=first.kid.encode()
        )
    held = custody.held("api")
    assert [(k.kid, k.created_at) for k in held] == [(first.kid, T0)]
    custody.destroy(first.handle)
    with _inspect(softhsm) as session:
        left = list(session.get_objects({Attribute.ID: first.kid.encode()}))
        assert [str(o[Attribute.LABEL]) for o in left] == ["someone-else", "someone-else"]
    custody.close()


def test_a_missing_token_is_a_temporary_error_that_names_the_label(softhsm: SoftHsm) -> None:
    custody = Pkcs11Custody(softhsm.module, "no-such-token", softhsm.pin)
    with pytest.raises(CustodyUnavailableError, match="no-such-token") as raised:
        custody.create("api", "ES256", 2048, T0)
    assert raised.value.temporary
    assert softhsm.pin not in str(raised.value)
