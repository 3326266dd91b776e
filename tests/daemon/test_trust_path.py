"""The recommended deployment end to end (docs/threat-model.md): the public listener on
HTTPS, the admin endpoints on a unix socket or an HTTPS port of their own, one scoped client per
issuer made with ``keyrotd client add``, and the Python issuer signing with it — its tokens
verified by PyJWT against the JWKS fetched over HTTPS with the test's CA.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from pathlib import Path

import jwt
import pytest

from keyrotd import KeyrotdError
from keyrotd.client import Issuer
from tests.support.daemon import free_port

from .conftest import DaemonFactory
from .test_scopes import KEYSETS, add_client, scoped_daemon
from .test_tls import TestCA


def https_jwks(port: int, ca_file: Path, keyset: str) -> jwt.PyJWKSet:
    context = ssl.create_default_context(cafile=ca_file)
    url = f"https://127.0.0.1:{port}/keysets/{keyset}/jwks.json"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        return jwt.PyJWKSet.from_dict(json.loads(answer.read()))


def verified(token: str, jwks: jwt.PyJWKSet) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key, algorithms=["ES256"], audience="api")


@pytest.mark.parametrize("admin_on", ["unix", "https"])
def test_a_scoped_issuer_signs_through_the_admin_listener(
    daemon_factory: DaemonFactory, tmp_path: Path, admin_on: str
) -> None:
    ca = TestCA.make(tmp_path / "pki")
    ca.issue(0x51)
    socket_path = tmp_path / "run" / "admin.sock"
    socket_path.parent.mkdir()
    admin_port = free_port()
    admin_listen = f"unix:{socket_path}" if admin_on == "unix" else f"127.0.0.1:{admin_port}"
    daemon = scoped_daemon(daemon_factory, admin=False)
    text = daemon.config.read_text()
    server = "".join(f'{k} = "{v}"\n' for k, v in ca.server_settings().items())
    daemon.config.write_text(
        text.replace("[server]\n", f'[server]\n{server}admin_listen = "{admin_listen}"\n')
    )
    daemon.ca_file = ca.file
    token = add_client(daemon, "issuer-a", "signing-key:a")
    daemon.start()
    if admin_on == "unix":
        issuer = Issuer.from_url(f"unix:{socket_path}", keyset="a", token=token)
        other = Issuer.from_url  # the same door, another keyset
        other_args: dict[str, object] = {"keyset": "b", "token": token}
        other_url = f"unix:{socket_path}"
    else:
        url = f"https://127.0.0.1:{admin_port}"
        issuer = Issuer.from_url(url, keyset="a", token=token, ca_file=str(ca.file))
        other = Issuer.from_url
        other_args = {"keyset": "b", "token": token, "ca_file": str(ca.file)}
        other_url = url
    try:
        signed = issuer.sign({"sub": "alice", "aud": "api"})
        claims = verified(signed, https_jwks(daemon.port, ca.file, "a"))
        assert claims["sub"] == "alice"
        # a scope for keyset a reads nothing of keyset b
        with pytest.raises(KeyrotdError) as refused:
            other(other_url, **other_args)  # type: ignore[arg-type]
        assert "403" in str(refused.value)
        assert token not in str(refused.value)
    finally:
        issuer.close()
    # the public listener has no admin routes at all
    context = ssl.create_default_context(cafile=ca.file)
    request = urllib.request.Request(
        f"https://127.0.0.1:{daemon.port}/keysets/a/signing-key",
        headers={"Authorization": f"Bearer {token}"},
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert missing.value.code == 404
    missing.value.close()
    audit = [e for e in daemon.log_events() if e.get("event") == "admin.request"]
    assert {(e["client"], e["keyset"], e["status"]) for e in audit} >= {
        ("issuer-a", "a", 200),
        ("issuer-a", "b", 403),
    }
    assert all(e["remote"] == "unix" for e in audit) == (admin_on == "unix")
    assert token not in daemon.log_text()


assert [k["name"] for k in KEYSETS] == ["a", "b"]
