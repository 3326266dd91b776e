"""OIDC discovery at each keyset's issuer path (OIDC Discovery §4), checked with the libraries
relying parties use: authlib computes the discovery URL and validates the members it defines,
PyJWT's ``PyJWKClient`` fetches the advertised ``jwks_uri`` and verifies a token with it.

The issuers are public ``https`` names, as in production; the test reaches them the way a
reverse proxy in front of keyrotd would, keeping the path and replacing scheme and host.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
from authlib.oidc.discovery import OpenIDProviderMetadata, get_well_known_url

from tests.support.config import render_config
from tests.support.daemon import Daemon

from .conftest import DaemonFactory

KEYSETS: list[dict[str, object]] = [
    {"name": "root", "algorithm": "RS256", "issuer": "https://auth.example.com"},
    {"name": "t1", "algorithm": "RS256", "issuer": "https://auth.example.com/tenant1"},
    {"name": "t2", "algorithm": "ES256", "issuer": "https://other.example/deep/tenant2/"},
    {"name": "plain", "algorithm": "ES256"},
]
MEMBERS = {
    "issuer",
    "jwks_uri",
    "id_token_signing_alg_values_supported",
    "response_types_supported",
    "subject_types_supported",
}


def local(daemon: Daemon, url: str) -> str:
    """``url`` as served by ``daemon``: its path on the daemon's address."""
    return f"http://127.0.0.1:{daemon.port}{urlsplit(url).path}"


def path_of(url: str) -> str:
    return urlsplit(url).path


@pytest.fixture
def issuers(daemon_factory: DaemonFactory) -> Daemon:
    return daemon_factory(keysets=KEYSETS).start()


def test_each_issuer_has_its_discovery_and_jwks_at_its_own_path(issuers: Daemon) -> None:
    for keyset in KEYSETS[:3]:
        issuer, name = str(keyset["issuer"]), str(keyset["name"])
        reply = issuers.get(get_well_known_url(issuer))  # the path, as authlib computes it
        assert reply.status == 200, (issuer, reply.body)
        assert reply.headers["content-type"] == "application/json"
        document = reply.json()
        assert set(document) == MEMBERS
        assert document["issuer"] == issuer
        assert document["jwks_uri"] == issuer.rstrip("/") + "/.well-known/jwks.json"
        assert document["id_token_signing_alg_values_supported"] == [keyset["algorithm"]]
        assert document["response_types_supported"] == ["id_token"]
        assert document["subject_types_supported"] == ["public"]
        metadata = OpenIDProviderMetadata(document)
        metadata.validate_issuer()
        metadata.validate_jwks_uri()
        metadata.validate_response_types_supported()
        metadata.validate_subject_types_supported()
        if keyset["algorithm"] == "RS256":  # OIDC requires RS256 in that list: RS256 keysets
            metadata.validate_id_token_signing_alg_values_supported()
        # the advertised jwks_uri serves that keyset's JWKS, with the JWKS caching headers
        served = issuers.get(path_of(document["jwks_uri"]))
        direct = issuers.get(f"/keysets/{name}/jwks.json")
        assert served.status == 200 and served.body == direct.body
        assert served.headers["etag"] == direct.headers["etag"]
        assert re.fullmatch(r"public, max-age=\d+", served.headers["cache-control"])
        again = issuers.get(
            path_of(document["jwks_uri"]), headers={"If-None-Match": served.headers["etag"]}
        )
        assert again.status == 304 and again.body == b""


def test_the_discovery_document_has_a_strong_etag(issuers: Daemon) -> None:
    reply = issuers.get("/tenant1/.well-known/openid-configuration")
    etag = reply.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert reply.headers["cache-control"] == "public, max-age=1"
    cached = issuers.get(
        "/tenant1/.well-known/openid-configuration", headers={"If-None-Match": etag}
    )
    assert cached.status == 304 and cached.body == b"" and cached.headers["etag"] == etag
    other = issuers.get("/.well-known/openid-configuration")
    assert other.json()["issuer"] == "https://auth.example.com"
    assert other.headers["etag"] != etag
    head = issuers.request("HEAD", "/deep/tenant2/.well-known/openid-configuration")
    assert head.status == 200 and head.body == b""


def test_pyjwkclient_verifies_a_token_through_the_advertised_jwks_uri(issuers: Daemon) -> None:
    for name, issuer in (("t1", "https://auth.example.com/tenant1"), ("t2", None)):
        issuer = issuer or "https://other.example/deep/tenant2/"
        document = issuers.get(get_well_known_url(issuer)).json()
        signing = issuers.admin("GET", f"/keysets/{name}/signing-key").json()["active"]
        token = jwt.encode(
            {"sub": "alice", "iss": issuer},
            jwt.PyJWK(signing).key,
            algorithm=signing["alg"],
            headers={"kid": signing["kid"]},
        )
        client = jwt.PyJWKClient(local(issuers, document["jwks_uri"]), cache_keys=False)
        key = client.get_signing_key_from_jwt(token)
        assert key.key_id == signing["kid"]
        claims = jwt.decode(token, key.key, algorithms=[signing["alg"]], issuer=issuer)
        assert claims["sub"] == "alice"


def test_paths_that_no_issuer_claims_are_404(issuers: Daemon) -> None:
    for path in (
        "/tenant2/.well-known/openid-configuration",
        "/deep/.well-known/openid-configuration",
        "/plain/.well-known/openid-configuration",
        "/tenant1/.well-known/",
        "/tenant1/.well-known/jwks.json/x",
    ):
        assert issuers.get(path).status == 404, path
    assert issuers.request("POST", "/tenant1/.well-known/jwks.json").status == 405


@pytest.mark.parametrize(
    ("first", "second", "path"),
    [
        ("https://a.example/t1", "https://b.example/t1/", '"/t1"'),
        ("https://a.example", "https://b.example/", "no path"),
        ("", "https://b.example", "no path"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_two_issuers_at_one_path_are_refused(
    tmp_path: Path, command: str, first: str, second: str, path: str
) -> None:
    keysets: list[dict[str, object]] = [
        {"name": "alpha", "publish_ahead": "1h"},
        {"name": "beta", "publish_ahead": "1h", "issuer": second},
    ]
    if first:
        keysets[0]["issuer"] = first
    config = tmp_path / "keyrotd.toml"
    config.write_text(render_config({"storage": {"path": tmp_path / "data"}}, keysets))
    result = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert '"alpha"' in lines[0] and '"beta"' in lines[0] and path in lines[0]
    assert "keysets[].issuer" in lines[0]
    assert not (tmp_path / "data").exists()  # refused before storage was touched
