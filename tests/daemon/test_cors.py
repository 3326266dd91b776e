"""CORS for browser verifiers (``server.cors_origins``, docs/http.md): JWKS and discovery answers
name an allowed origin and always vary on ``Origin``; preflights get 204; admin endpoints never
carry CORS headers."""

from __future__ import annotations

import pytest

from keyrotd.cli import main
from tests.support.daemon import TOKEN, Daemon

from .conftest import DaemonFactory

ALLOWED = "https://app.example.com"
KEYSETS: list[dict[str, object]] = [
    {
        "name": "main",
        "algorithm": "ES256",
        "rotation_period": "1h",
        "publish_ahead": "1h",
        "issuer": "https://auth.example.com/t1",
    }
]
PUBLIC = (
    "/.well-known/jwks.json",
    "/keysets/main/jwks.json",
    "/t1/.well-known/jwks.json",
    "/t1/.well-known/openid-configuration",
)


@pytest.fixture
def listed(daemon_factory: DaemonFactory) -> Daemon:
    server = {"cors_origins": [ALLOWED, "http://localhost:3000"]}
    return daemon_factory(keysets=KEYSETS, server=server).start()


def test_listed_origins_are_allowed_and_every_answer_varies_on_origin(listed: Daemon) -> None:
    for path in PUBLIC:
        reply = listed.get(path, headers={"Origin": ALLOWED})
        assert reply.status == 200, path
        assert reply.headers["access-control-allow-origin"] == ALLOWED, path
        assert reply.headers["vary"] == "Origin", path
        other = listed.get(path, headers={"Origin": "http://localhost:3000"})
        assert other.headers["access-control-allow-origin"] == "http://localhost:3000"
        for headers in ({"Origin": "https://evil.example.com"}, {}):
            refused = listed.get(path, headers=headers)
            assert refused.status == 200, path
            assert "access-control-allow-origin" not in refused.headers, (path, headers)
            assert refused.headers["vary"] == "Origin", path
        etag = reply.headers["etag"]
        for origin in (ALLOWED, "https://evil.example.com"):
            cached = listed.get(path, headers={"Origin": origin, "If-None-Match": etag})
            assert cached.status == 304, path
            assert cached.headers["vary"] == "Origin", path
        assert (
            listed.get(path, headers={"Origin": ALLOWED, "If-None-Match": etag}).headers[
                "access-control-allow-origin"
            ]
            == ALLOWED
        )


def test_a_preflight_from_a_listed_origin_gets_204(listed: Daemon) -> None:
    asking = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "if-none-match",
    }
    for path in PUBLIC:
        reply = listed.request("OPTIONS", path, headers=asking)
        assert reply.status == 204, path
        assert reply.body == b""
        assert reply.headers["access-control-allow-origin"] == ALLOWED
        assert reply.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
        assert reply.headers["vary"] == "Origin"
        other = listed.request("OPTIONS", path, headers={**asking, "Origin": "https://x.example"})
        assert "access-control-allow-origin" not in other.headers


def test_any_origin(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(keysets=KEYSETS, server={"cors_origins": ["*"]}).start()
    for path in PUBLIC:
        reply = daemon.get(path, headers={"Origin": "https://anyone.example"})
        assert reply.headers["access-control-allow-origin"] == "*", path
        assert reply.headers["vary"] == "Origin"
        preflight = daemon.request("OPTIONS", path, headers={"Origin": "https://anyone.example"})
        assert preflight.status == 204
        assert preflight.headers["access-control-allow-origin"] == "*"


def test_admin_endpoints_never_carry_cors_headers(listed: Daemon) -> None:
    for method, path in (
        ("GET", "/signing-key"),
        ("GET", "/keysets/main/signing-key"),
        ("POST", "/keysets/main/rotate"),
        ("OPTIONS", "/keysets/main/signing-key"),
    ):
        for token in (TOKEN, "wrong"):
            reply = listed.request(
                method, path, headers={"Origin": ALLOWED, "Authorization": f"Bearer {token}"}
            )
            assert not any(h.startswith("access-control-") for h in reply.headers), (method, path)
            assert "vary" not in reply.headers, (method, path)


def test_without_cors_origins_nothing_changes(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(keysets=KEYSETS).start()
    reply = daemon.get("/keysets/main/jwks.json", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in reply.headers
    assert daemon.request("OPTIONS", "/keysets/main/jwks.json").status == 405


@pytest.mark.parametrize(
    "origin",
    ["app.example.com", "https://app.example.com/", "https://app.example.com/path", "ftp://x.y"],
)
def test_a_bad_origin_is_refused_naming_the_setting(
    tmp_path: object, origin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[server]\ncors_origins = ["{origin}"]\n')
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cors_origins" in err
    assert len(err.strip().splitlines()) == 1


def test_sighup_changes_the_origins(daemon_factory: DaemonFactory) -> None:
    from .test_scopes import reload

    daemon = daemon_factory(keysets=KEYSETS).start()
    path = "/keysets/main/jwks.json"
    assert "access-control-allow-origin" not in daemon.get(path, {"Origin": ALLOWED}).headers
    text = daemon.config.read_text()
    daemon.config.write_text(
        text.replace("[server]\n", f'[server]\ncors_origins = ["{ALLOWED}"]\n')
    )
    reload(daemon, "config.reloaded")
    assert daemon.get(path, {"Origin": ALLOWED}).headers["access-control-allow-origin"] == ALLOWED
