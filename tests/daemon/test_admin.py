"""The authenticated endpoints: bearer token checks, 404 when disabled, the three actions
(scoped clients: test_scopes; the audit trail: test_audit)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.support.daemon import TOKEN, Daemon
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

ADMIN_ROUTES = (
    ("GET", "/signing-key"),
    ("GET", "/keysets/main/signing-key"),
    ("POST", "/keysets/main/rotate"),
    ("POST", "/keysets/main/keys/some-kid/revoke"),
)


def kids(daemon: Daemon) -> list[str]:
    return [key["kid"] for key in daemon.get("/keysets/main/jwks.json").json()["keys"]]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_refuse_a_missing_or_wrong_token(
    daemon: Daemon, method: str, path: str
) -> None:
    wrong = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},  # almost right
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN.upper()}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for headers in wrong:
        reply = daemon.request(method, path, headers=headers)
        assert reply.status == 401, headers
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json() == {"error": "missing or invalid bearer token"}
        assert TOKEN not in reply.body.decode()


def test_admin_routes_do_not_exist_without_a_token_or_clients_file(
    daemon_factory: DaemonFactory,
) -> None:
    """Neither server.admin_token_file nor server.admin_clients_file: 404, as for any unknown
    path, with nothing to audit."""
    daemon = daemon_factory(admin=False).start()
    for method, path in ADMIN_ROUTES:
        reply = daemon.admin(method, path)
        assert reply.status == 404, path
        assert reply.json() == {"error": "not found"}
        assert "www-authenticate" not in reply.headers
    assert not [e for e in daemon.log_events() if str(e.get("event")).startswith("admin.")]


def test_admin_wrong_method_is_405(daemon: Daemon) -> None:
    assert daemon.admin("POST", "/keysets/main/signing-key").status == 405
    reply = daemon.admin("GET", "/keysets/main/rotate")
    assert reply.status == 405 and reply.headers["allow"] == "POST"


def test_signing_key_gives_the_active_and_next_private_keys(daemon: Daemon) -> None:
    reply = daemon.admin("GET", "/keysets/main/signing-key")
    assert reply.status == 200
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert {"d", "x", "y", "kid"} <= set(body["active"])
    assert {"d", "x", "y", "kid"} <= set(body["next"])
    assert body["active"]["kid"] == kids(daemon)[0]
    assert body["next"]["kid"] in kids(daemon)
    assert body["next_activates_at"].endswith("Z")
    datetime.fromisoformat(body["next_activates_at"])
    assert body["token_lifetime"] == 3600
    assert daemon.admin("GET", "/keysets/other/signing-key").status == 404


def test_signing_key_durations_are_whole_seconds_in_the_json(daemon: Daemon) -> None:
    """Go's and serde's integer fields refuse ``3600.0``: the raw bytes say ``3600``."""
    body = daemon.admin("GET", "/keysets/main/signing-key").body
    durations = body[body.index(b'"token_lifetime"') :]  # after the keys: no key material shown
    assert durations == b'"token_lifetime":3600,"publish_ahead":3600,"issuer":null}'

    def no_float(text: str) -> float:
        raise AssertionError(f"a float in the signing-key body: {text}")

    decoded = json.loads(body, parse_float=no_float)
    assert type(decoded["token_lifetime"]) is int and type(decoded["publish_ahead"]) is int


def test_signing_key_at_the_root_is_the_first_keysets(daemon_factory: DaemonFactory) -> None:
    keysets: list[dict[str, object]] = [
        {"name": name, "algorithm": "ES256", "publish_ahead": "1h"} for name in ("one", "two")
    ]
    daemon = daemon_factory(keysets=keysets).start()
    reply = daemon.admin("GET", "/signing-key")
    assert reply.status == 200 and reply.headers["cache-control"] == "no-store"
    assert reply.body == daemon.admin("GET", "/keysets/one/signing-key").body
    assert reply.body != daemon.admin("GET", "/keysets/two/signing-key").body
    assert daemon.admin("POST", "/signing-key").status == 405


def test_rotate_now_activates_the_published_successor(daemon_factory: DaemonFactory) -> None:
    """Without force, once the successor is refresh_interval + max(jwks_max_age,
    verifier_cache) = 1s + max(1s, 1s) = 2s old."""
    keyset = {"name": "main", "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
    keyset["verifier_cache"] = "1s"
    daemon = daemon_factory(keysets=[keyset]).start()
    before = daemon.admin("GET", "/keysets/main/signing-key").json()
    reply = wait_for(
        lambda: (r := daemon.admin("POST", "/keysets/main/rotate?now=true")).status != 409 and r,
        10,
        "the successor to be 2s old",
        every=0.25,
    )
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["active"] == before["next"]["kid"]
    activated = [t for t in body["transitions"] if t["event"] == "key.activated"]
    assert activated[0]["exception"] == "rotate --now"
    after = daemon.admin("GET", "/keysets/main/signing-key").json()
    assert after["active"]["kid"] == before["next"]["kid"]
    assert kids(daemon)[0] == before["next"]["kid"]
    assert daemon.admin("POST", "/keysets/main/rotate?now=perhaps").status == 400


def test_rotate_says_there_is_nothing_to_bring_forward(daemon: Daemon) -> None:
    before = daemon.admin("GET", "/keysets/main/signing-key").json()
    reply = daemon.admin("POST", "/keysets/main/rotate")
    assert reply.status == 200, reply.body
    body = reply.json()
    successor = before["next"]["kid"]
    assert body["nothing_to_bring_forward"] is True
    assert body["next"] == {"kid": successor, "activates_at": before["next_activates_at"]}
    assert body["message"].startswith(f"main: nothing to bring forward: {successor}, published at ")
    assert f"activates at {before['next_activates_at'].split('.')[0]}" in body["message"]
    assert "`?now=true` activates it at once, as an emergency" in body["message"]
    assert daemon.admin("GET", "/keysets/main/signing-key").json() == before


def test_rotate_now_refuses_a_successor_published_a_moment_ago(daemon: Daemon) -> None:
    """1s + max(1s, verifier_cache 30s): the successor is not 31s old yet: 409, nothing
    changed; force=true activates it all the same."""
    before = daemon.admin("GET", "/keysets/main/signing-key").json()
    reply = daemon.admin("POST", "/keysets/main/rotate?now=true")
    assert reply.status == 409, reply.body
    body = reply.json()
    assert set(body) == {"error", "keyset"} and body["keyset"] == "main"
    assert body["error"].startswith(
        f"keyset main: refusing rotate --now: its successor {before['next']['kid']} was "
        "published at "
    )
    assert "= 31s after its publication" in body["error"]
    assert body["error"].endswith("or add force=true to activate it anyway")
    assert daemon.admin("GET", "/keysets/main/signing-key").json() == before
    assert daemon.admin("POST", "/keysets/main/rotate?force=true").status == 400
    reply = daemon.admin("POST", "/keysets/main/rotate?now=true&force=true")
    assert reply.status == 200, reply.body
    assert reply.json()["active"] == before["next"]["kid"]
    audited = [e for e in daemon.log_events() if e.get("event") == "admin.request"]
    assert [e["status"] for e in audited if e["action"] == "rotate"] == [409, 400, 200]


def test_revoke_drops_the_key_and_hands_over(daemon: Daemon) -> None:
    active = daemon.admin("GET", "/keysets/main/signing-key").json()["active"]["kid"]
    reply = daemon.admin("POST", f"/keysets/main/keys/{active}/revoke")
    assert reply.status == 200, reply.body
    assert active not in kids(daemon)
    assert reply.json()["active"] != active
    assert daemon.admin("POST", f"/keysets/main/keys/{active}/revoke").status == 200  # no-op
    unknown = daemon.admin("POST", "/keysets/main/keys/no-such-kid/revoke")
    assert unknown.status == 404
    assert unknown.json() == {"error": "keyset main has no key with kid no-such-kid"}


def test_a_large_body_on_an_admin_route_is_refused(daemon: Daemon) -> None:
    reply = daemon.request(
        "POST",
        "/keysets/main/rotate",
        headers={"Authorization": f"Bearer {TOKEN}"},
        body=b"x" * 100_000,
    )
    assert reply.status == 413


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "does not exist"),
        ("  \n", 0o600, "is empty"),
        (TOKEN, 0o644, "accessible to other users (mode 644)"),
        (TOKEN, 0o620, "accessible to other users (mode 620)"),
    ],
)
def test_a_bad_token_file_refuses_the_start(
    daemon_factory: DaemonFactory, content: str | None, mode: int, message: str
) -> None:
    daemon = daemon_factory()
    token_file = daemon.workdir / "admin.token"
    if content is None:
        token_file.unlink()
    else:
        token_file.write_text(content)
        token_file.chmod(mode)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 2
    assert message in daemon.log_text()
    assert "server.admin_token_file" in daemon.log_text()
