"""``Issuer.from_url(..., remote=True)`` (docs/issuers.md): every token is signed by the daemon's
``POST .../sign``; the issuer never reads, let alone holds, a private key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from keyrotd.client import Issuer
from keyrotd.errors import KeyrotdError, TokenError
from tests.support.daemon import Daemon

from .conftest import DaemonFactory
from .test_scopes import add_client
from .test_sign import KEYSETS, with_clients

ISSUER = "https://auth.example.com/t1"


def started(daemon_factory: DaemonFactory, **server: object) -> tuple[Daemon, str]:
    """Keysets a (ES256, issuer) and b; a client ``signer`` with ``sign:a`` only."""
    daemon = with_clients(daemon_factory(keysets=KEYSETS, admin=False, server=server))
    token = add_client(daemon, "signer", "sign:a")
    daemon.start()
    return daemon, token


def verify(daemon: Daemon, token: str) -> dict[str, object]:
    jwks = jwt.PyJWKSet.from_dict(daemon.get("/keysets/a/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, object] = jwt.decode(
        token, key.key, algorithms=[key.algorithm_name], options={"verify_aud": False}
    )
    return claims


def test_a_remote_issuer_signs_through_the_daemon(daemon_factory: DaemonFactory) -> None:
    daemon, token = started(daemon_factory)
    # the client may not read the signing key: the issuer starts all the same
    assert daemon.admin("GET", "/keysets/a/signing-key", token).status == 403
    with Issuer.from_url(daemon.url, keyset="a", token=f" {token}\n", remote=True) as issuer:
        claims = verify(daemon, issuer.sign({"sub": "alice", "aud": "api"}))
        assert claims["sub"] == "alice"
        assert claims["iss"] == ISSUER
        assert claims["exp"] - claims["iat"] == 600  # type: ignore[operator]
        short = verify(daemon, issuer.sign({"sub": "bob"}, lifetime=timedelta(seconds=30)))
        assert short["exp"] - short["iat"] == 30  # type: ignore[operator]
        extra = verify(daemon, issuer.sign({"sub": "c"}, not_before=True, jti=True))
        assert extra["nbf"] == extra["iat"] and extra["jti"]
        with pytest.raises(TokenError, match="lifetime"):
            issuer.sign({}, lifetime=601)
        with pytest.raises(TokenError, match="exp"):
            issuer.sign({"exp": 1})
        with pytest.raises(KeyrotdError, match="remote=True"):
            issuer.signing_key()
        private = {"d", "p", "q"}
        assert not any(private & set(v) for v in vars(issuer).values() if isinstance(v, dict))
    # without keyset=: the first keyset, through POST /sign
    with Issuer.from_url(daemon.url, token=token, remote=True) as first:
        assert verify(daemon, first.sign({"sub": "d"}))["sub"] == "d"
    lines = [e for e in daemon.log_events() if e.get("action") == "sign"]
    assert len(lines) >= 5 and all(e["client"] == "signer" for e in lines)


def test_refusals_name_the_cause_and_never_the_token(daemon_factory: DaemonFactory) -> None:
    daemon, token = started(daemon_factory)
    wrong = "x" * 40
    issuer = Issuer.from_url(daemon.url, keyset="a", token=wrong, remote=True)
    with pytest.raises(KeyrotdError) as refused:
        issuer.sign({"sub": "alice"})
    assert "401" in str(refused.value) and wrong not in str(refused.value)
    other = Issuer.from_url(daemon.url, keyset="b", token=token, remote=True)
    with pytest.raises(KeyrotdError, match="sign:b"):
        other.sign({})
    daemon.stop()
    with pytest.raises(KeyrotdError) as down:
        Issuer.from_url(daemon.url, keyset="a", token=token, remote=True).sign({})
    assert token not in str(down.value)


def test_over_the_admin_unix_socket(daemon_factory: DaemonFactory, tmp_path: Path) -> None:
    socket = tmp_path / "admin.sock"
    daemon, token = started(daemon_factory, admin_listen=f"unix:{socket}")
    issuer = Issuer.from_url(f"unix:{socket}", keyset="a", token=token, remote=True)
    assert verify(daemon, issuer.sign({"sub": "u"}))["sub"] == "u"
