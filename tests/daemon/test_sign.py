"""The signing API (docs/http.md): ``POST /keysets/{name}/sign`` and ``POST /sign`` with the scope
``sign:KEYSET``; tokens checked with PyJWT against the served JWKS and with keyrotd's own
``inspect``."""

from __future__ import annotations

import contextlib
import io
import json
import time
from datetime import datetime
from typing import Any

import jwt
import pytest

from keyrotd.cli import main
from tests.support.daemon import Daemon, make_daemon
from tests.support.http import Reply, metric

from .conftest import DaemonFactory
from .test_scopes import add_client

ISSUER = "https://auth.example.com/t1"
KEYSETS: list[dict[str, object]] = [
    {
        "name": "a",
        "algorithm": "ES256",
        "rotation_period": "1h",
        "publish_ahead": "1h",
        "token_lifetime": "10m",
        "issuer": ISSUER,
    },
    {"name": "b", "algorithm": "RS256", "rotation_period": "1h", "publish_ahead": "1h"},
]


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One daemon for the module: keysets a (ES256, issuer) and b (RS256), clients ``signer``
    (``sign:a``) and ``reader`` (``signing-key:*``)."""
    workdir = tmp_path_factory.mktemp("sign")
    daemon = with_clients(make_daemon(workdir / "daemon", keysets=KEYSETS, admin=False))
    tokens = {
        "signer": add_client(daemon, "signer", "sign:a"),
        "reader": add_client(daemon, "reader", "signing-key:*"),
        "all": add_client(daemon, "all", "sign:*"),
    }
    daemon.start()
    yield daemon, tokens
    daemon.stop()


def with_clients(daemon: Daemon) -> Daemon:
    clients = daemon.workdir / "clients.toml"
    text = daemon.config.read_text()
    daemon.config.write_text(
        text.replace("[server]\n", f'[server]\nadmin_clients_file = "{clients}"\n')
    )
    return daemon


def post(daemon: Daemon, path: str, token: str, body: object, raw: bytes | None = None) -> Reply:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return daemon.request("POST", path, headers=headers, body=data)


def verify(daemon: Daemon, keyset: str, token: str, **options: Any) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict(daemon.get(f"/keysets/{keyset}/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=[key.algorithm_name], **options)


def test_a_token_signed_by_the_daemon_verifies(signing: Any) -> None:
    daemon, tokens = signing
    before = time.time()
    reply = post(daemon, "/keysets/a/sign", tokens["signer"], {"claims": {"sub": "alice"}})
    assert reply.status == 200, reply.body
    assert reply.headers["cache-control"] == "no-store"
    answer = reply.json()
    assert set(answer) == {"token", "kid", "expires_at"}
    header = jwt.get_unverified_header(answer["token"])
    assert header == {"alg": "ES256", "kid": answer["kid"], "typ": "JWT"}
    active = daemon.admin("GET", "/keysets/a/signing-key", tokens["reader"]).json()["active"]
    assert answer["kid"] == active["kid"]
    claims = verify(daemon, "a", answer["token"], audience=None, issuer=ISSUER)
    assert claims["sub"] == "alice"
    assert claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 600
    assert before - 1 <= claims["iat"] <= time.time()
    assert datetime.fromisoformat(answer["expires_at"]).timestamp() == claims["exp"]
    # keyrotd's own inspect agrees
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--config", str(daemon.config), "inspect", answer["token"], "--keyset", "a"])
    assert code == 0, out.getvalue()


def test_lifetime_typ_and_the_first_keyset(signing: Any) -> None:
    daemon, tokens = signing
    body = {"claims": {"sub": "bob", "iss": ISSUER}, "lifetime": 60, "typ": "at+jwt"}
    reply = post(daemon, "/sign", tokens["signer"], body)
    assert reply.status == 200, reply.body
    token = reply.json()["token"]
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    claims = verify(daemon, "a", token)
    assert claims["exp"] - claims["iat"] == 60
    # sign:* signs with b's RSA key; b has no issuer: no iss
    reply = post(daemon, "/keysets/b/sign", tokens["all"], {"claims": {"sub": "carol"}})
    assert reply.status == 200, reply.body
    claims = verify(daemon, "b", reply.json()["token"])
    assert "iss" not in claims
    assert jwt.get_unverified_header(reply.json()["token"])["alg"] == "RS256"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[]", "JSON object"),
        (b"not json", "JSON"),
        (b"{}", "claims"),
        (b'{"claims": []}', "claims"),
        (b'{"claims": "x"}', "claims"),
        (b'{"claims": {"iat": 1}}', "iat"),
        (b'{"claims": {"exp": 1}}', "exp"),
        (b'{"claims": {"iss": "https://other.example"}}', "iss"),
        (b'{"claims": {}, "lifetime": 601}', "lifetime"),
        (b'{"claims": {}, "lifetime": 0}', "lifetime"),
        (b'{"claims": {}, "lifetime": "60"}', "lifetime"),
        (b'{"claims": {}, "lifetime": true}', "lifetime"),
        (b'{"claims": {}, "typ": 3}', "typ"),
        (b'{"claims": {}, "other": 3}', "other"),
    ],
)
def test_bad_requests_are_400(signing: Any, body: bytes, words: str) -> None:
    daemon, tokens = signing
    reply = post(daemon, "/keysets/a/sign", tokens["signer"], None, raw=body)
    assert reply.status == 400, reply.body
    assert words in reply.json()["error"]


def test_a_body_above_64_kib_is_413(signing: Any) -> None:
    daemon, tokens = signing
    claims = {"sub": "x" * (64 * 1024)}
    assert post(daemon, "/keysets/a/sign", tokens["signer"], {"claims": claims}).status == 413


def test_scopes_and_methods(signing: Any) -> None:
    daemon, tokens = signing
    body = {"claims": {"sub": "x"}}
    assert post(daemon, "/keysets/b/sign", tokens["signer"], body).status == 403
    assert post(daemon, "/keysets/a/sign", tokens["reader"], body).status == 403
    assert post(daemon, "/keysets/a/sign", "wrong", body).status == 401
    assert daemon.admin("GET", "/keysets/a/sign", tokens["signer"]).status == 405
    assert post(daemon, "/keysets/zz/sign", tokens["all"], body).status == 404


def test_audit_lines_and_metrics_never_hold_the_claims(signing: Any) -> None:
    daemon, tokens = signing
    secret = "claim-value-that-must-not-be-logged"
    signed = metric(daemon, 'keyrotd_tokens_signed_total{keyset="a"}') or 0.0
    for _ in range(3):
        reply = post(daemon, "/keysets/a/sign", tokens["signer"], {"claims": {"sub": secret}})
        assert reply.status == 200
    refused = post(
        daemon, "/keysets/a/sign", tokens["signer"], {"claims": {"sub": secret, "exp": 1}}
    )
    assert refused.status == 400

    def lines() -> list[dict[str, Any]]:
        return [
            e
            for e in daemon.log_events()
            if e.get("event") == "admin.request" and e.get("action") == "sign"
        ]

    deadline = time.time() + 5
    while len(lines()) < 4 and time.time() < deadline:
        time.sleep(0.05)
    statuses = [e["status"] for e in lines()]
    assert statuses.count(200) >= 3 and 400 in statuses
    assert all(e["client"] in ("signer", "all", "reader", "unknown") for e in lines())
    assert secret not in daemon.log_text()
    assert metric(daemon, 'keyrotd_tokens_signed_total{keyset="a"}') == signed + 3
    count = metric(daemon, 'keyrotd_sign_seconds_count{keyset="a"}')
    assert count is not None and count >= 3
    assert secret not in daemon.get("/metrics").body.decode()


def test_a_new_signing_key_signs_after_rotate_now(daemon_factory: DaemonFactory) -> None:
    daemon = with_clients(daemon_factory(keysets=KEYSETS))
    token = add_client(daemon, "signer", "sign:a")
    daemon.start()
    first = post(daemon, "/keysets/a/sign", token, {"claims": {}}).json()["kid"]
    rotated = daemon.admin("POST", "/keysets/a/rotate?now=true&force=true")
    assert rotated.status == 200
    second = post(daemon, "/keysets/a/sign", token, {"claims": {}}).json()
    assert second["kid"] != first
    verify(daemon, "a", second["token"])


def test_a_running_daemon_signs_with_a_key_imported_by_the_cli(
    daemon_factory: DaemonFactory,
) -> None:
    """``keyrotd import`` beside a running daemon: it serves the key at the next refresh and
    ``POST .../sign`` signs with it at once (the key of the snapshot it serves)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    daemon = with_clients(daemon_factory(keysets=KEYSETS))
    token = add_client(daemon, "signer", "sign:a")
    daemon.start()
    key = ec.generate_private_key(ec.SECP256R1())
    path = daemon.workdir / "issuer-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--config", str(daemon.config), "import", str(path), "--keyset", "a"])
    assert code == 0
    kid = out.getvalue().split("imported ")[1].split(",")[0]
    deadline = time.time() + 10
    while time.time() < deadline:
        signed = post(daemon, "/keysets/a/sign", token, {"claims": {"sub": "x"}}).json()
        if signed["kid"] == kid:
            break
        time.sleep(0.1)
    assert signed["kid"] == kid
    claims = jwt.decode(signed["token"], key.public_key(), algorithms=["ES256"], issuer=ISSUER)
    assert claims["sub"] == "x"
