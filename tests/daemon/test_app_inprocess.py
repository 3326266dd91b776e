"""The HTTP app's routing and admin endpoints, in-process (docs/http.md, docs/http.md).

The app is built from a configuration as ``keyrotd run`` builds it, over a real rotator and file
store, and sent requests directly (``tests.support.app``): milliseconds per request, no listener.
The subprocess tests beside this file check the same answers through a real listener.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrotd.cli import main
from tests.support.app import Running, ask, running_app
from tests.support.daemon import TOKEN, make_daemon

BEARER = {"Authorization": f"Bearer {TOKEN}"}
KEYSETS: list[dict[str, object]] = [
    {"name": name, "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
    for name in ("a", "b")
]
MAX_AGE = 300
"""``server.jwks_max_age`` (5m) of these tests."""


def add_client(config: Path, name: str, *scopes: str) -> str:
    """``keyrotd client add NAME --scope ...`` in-process; the new client's token."""
    out = io.StringIO()
    argv = ["--config", str(config), "client", "add", name]
    argv += [a for scope in scopes for a in ("--scope", scope)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return out.getvalue().splitlines()[-1]


def write_config(
    tmp_path: Path, *, admin: bool = True, clients: bool = False, **server: object
) -> Path:
    """Keysets ``a`` and ``b``; the admin token file unless ``admin=False``; ``clients``: a
    clients file too (``add_client`` makes it)."""
    daemon = make_daemon(
        tmp_path, keysets=KEYSETS, admin=admin, server={"jwks_max_age": "5m", **server}
    )
    if clients:
        clients = tmp_path / "clients.toml"
        text = daemon.config.read_text()
        daemon.config.write_text(
            text.replace("[server]\n", f'[server]\nadmin_clients_file = "{clients}"\n')
        )
    return daemon.config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def running(config: Path) -> Iterator[Running]:
    with running_app(config) as running:
        yield running


# -- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["/", "/nothing", "/.well-known/other.json", "/keysets", "/keysets/a/unknown"]
)
def test_unknown_paths_are_404_with_a_json_body(running: Running, target: str) -> None:
    reply = ask(running.public, "GET", target)
    assert (reply.status, reply.json()) == (404, {"error": "not found"})
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"


def test_an_unknown_keyset_is_404_naming_it(running: Running) -> None:
    reply = ask(running.public, "GET", "/keysets/nope/jwks.json")
    assert (reply.status, reply.json()) == (404, {"error": "unknown keyset nope"})


@pytest.mark.parametrize(
    "target", ["/.well-known/jwks.json", "/keysets/b/jwks.json", "/healthz", "/readyz", "/metrics"]
)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_public_paths_answer_405_to_other_methods(
    running: Running, target: str, method: str
) -> None:
    reply = ask(running.public, method, target)
    assert (reply.status, reply.json()) == (405, {"error": "method not allowed"})
    assert reply.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("method", "target", "allowed"),
    [
        ("POST", "/keysets/a/signing-key", "GET, HEAD"),
        ("POST", "/signing-key", "GET, HEAD"),
        ("POST", "/keysets/a/status", "GET, HEAD"),
        ("GET", "/keysets/a/rotate", "POST"),
        ("GET", "/keysets/a/sign", "POST"),
        ("GET", "/keysets/a/keys/somekid/revoke", "POST"),
    ],
)
def test_admin_paths_answer_405_before_asking_for_a_token(
    running: Running, method: str, target: str, allowed: str
) -> None:
    reply = ask(running.public, method, target)  # no token at all: the method is checked first
    assert reply.status == 405
    assert reply.headers["allow"] == allowed


@pytest.mark.parametrize(
    "target",
    [
        "/keysets/a%2Fsigning-key",
        "/keysets/a%2fsigning-key",
        "/keysets/a%2Fb/jwks.json",
        "/.well-known%2Fjwks.json",
        "/healthz%2F",
    ],
)
def test_an_encoded_slash_is_400_on_every_route(running: Running, target: str) -> None:
    reply = ask(running.public, "GET", target, BEARER)
    assert reply.status == 400
    assert reply.json() == {"error": "a path segment must not hold an encoded / (%2F)"}


def test_without_admin_settings_the_admin_paths_do_not_exist(tmp_path: Path) -> None:
    with running_app(write_config(tmp_path, admin=False)) as running:
        for method, target in [
            ("GET", "/signing-key"),
            ("GET", "/keysets/a/signing-key"),
            ("POST", "/keysets/a/rotate"),
            ("GET", "/status"),
        ]:
            reply = ask(running.public, method, target, BEARER)
            assert (reply.status, reply.json()) == (404, {"error": "not found"}), target
        assert ask(running.public, "GET", "/keysets/a/jwks.json").status == 200


def test_an_admin_listener_splits_the_routes(tmp_path: Path) -> None:
    config = write_config(tmp_path, clients=True, admin_listen=f"unix:{tmp_path / 'admin.sock'}")
    issuer = add_client(config, "issuer", "signing-key:a")
    with running_app(config) as running:
        admin = running.admin
        assert admin is not None
        # the public app: JWKS and probes, no admin endpoint
        assert ask(running.public, "GET", "/keysets/a/jwks.json").status == 200
        assert ask(running.public, "GET", "/keysets/a/signing-key", BEARER).status == 404
        # the admin app: the admin endpoints, no JWKS or probes
        assert ask(admin, "GET", "/keysets/a/signing-key", BEARER).status == 200
        for target in ["/.well-known/jwks.json", "/keysets/a/jwks.json", "/healthz", "/readyz"]:
            assert ask(admin, "GET", target, BEARER).status == 404, target
        # /metrics there is for a token with a status scope (the admin token has every scope)
        assert ask(admin, "GET", "/metrics").status == 401
        assert ask(admin, "GET", "/metrics", BEARER).status == 200
        reply = ask(admin, "GET", "/metrics", {"Authorization": f"Bearer {issuer}"})
        assert reply.status == 403


# -- JWKS --------------------------------------------------------------------------------------


def test_the_jwks_has_public_keys_a_strong_etag_and_a_bounded_max_age(running: Running) -> None:
    reply = ask(running.public, "GET", "/.well-known/jwks.json")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert re.fullmatch(r'"[0-9a-f]{32}"', reply.headers["etag"])
    cache = re.fullmatch(r"public, max-age=(\d+)", reply.headers["cache-control"])
    assert cache is not None and 0 < int(cache[1]) <= MAX_AGE
    keys = reply.json()["keys"]
    assert len(keys) == 2  # the active key and its published successor
    assert all(set(key) & {"d", "p", "q", "dp", "dq", "qi"} == set() for key in keys)
    # /.well-known is the first keyset's
    first = ask(running.public, "GET", "/keysets/a/jwks.json")
    assert (first.body, first.headers["etag"]) == (reply.body, reply.headers["etag"])
    other = ask(running.public, "GET", "/keysets/b/jwks.json")
    assert other.status == 200 and other.headers["etag"] != reply.headers["etag"]


def test_a_matching_if_none_match_is_304_without_a_body(running: Running) -> None:
    etag = ask(running.public, "GET", "/keysets/a/jwks.json").headers["etag"]
    for sent in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
        reply = ask(running.public, "GET", "/keysets/a/jwks.json", {"If-None-Match": sent})
        assert (reply.status, reply.body) == (304, b""), sent
        assert reply.headers["etag"] == etag
        assert reply.headers["cache-control"].startswith("public, max-age=")
    stale = ask(running.public, "GET", "/keysets/a/jwks.json", {"If-None-Match": '"other"'})
    assert stale.status == 200 and stale.json()["keys"]


def test_head_has_the_headers_of_get_and_no_body(running: Running) -> None:
    got = ask(running.public, "GET", "/keysets/a/jwks.json")
    head = ask(running.public, "HEAD", "/keysets/a/jwks.json")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["etag"] == got.headers["etag"]


# -- probes ------------------------------------------------------------------------------------


def test_readyz_names_the_keysets_and_says_stopping(running: Running) -> None:
    reply = ask(running.public, "GET", "/readyz")
    assert (reply.status, reply.json()) == (
        200,
        {"status": "ready", "keysets": ["a", "b"], "degraded": []},
    )
    assert ask(running.public, "GET", "/healthz").json() == {"status": "ok"}
    running.public.stopping = True
    reply = ask(running.public, "GET", "/readyz")
    assert (reply.status, reply.json()) == (503, {"status": "stopping", "keysets": ["a", "b"]})


def test_healthz_fails_once_the_scheduler_stopped(config: Path) -> None:
    with running_app(config) as running:
        assert ask(running.public, "GET", "/healthz").status == 200
    reply = ask(running.public, "GET", "/healthz")  # the rotator is shut down now
    assert (reply.status, reply.json()) == (
        503,
        {"status": "failing", "reason": "the scheduler stopped"},
    )


# -- admin: tokens and scopes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_no_known_token_is_401_with_a_challenge(running: Running, headers: dict[str, str]) -> None:
    for method, target in [
        ("GET", "/keysets/a/signing-key"),
        ("GET", "/signing-key"),
        ("GET", "/keysets/a/status"),
        ("POST", "/keysets/a/rotate"),
        ("POST", "/keysets/a/keys/somekid/revoke"),
    ]:
        reply = ask(running.public, method, target, headers)
        assert reply.status == 401, (method, target)
        assert reply.headers["www-authenticate"] == 'Bearer realm="keyrotd"'
        assert reply.json() == {"error": "missing or invalid bearer token"}


def test_scopes_decide_per_action_and_keyset(tmp_path: Path) -> None:
    config = write_config(tmp_path, clients=True)
    reader = add_client(config, "reader", "signing-key:a")
    watcher = add_client(config, "watcher", "status:*")
    with running_app(config) as running:
        app = running.public
        as_reader = {"Authorization": f"Bearer {reader}"}
        as_watcher = {"Authorization": f"Bearer {watcher}"}

        assert ask(app, "GET", "/keysets/a/signing-key", as_reader).status == 200
        assert ask(app, "GET", "/signing-key", as_reader).status == 200  # a is the first keyset
        refused = ask(app, "GET", "/keysets/b/signing-key", as_reader)
        assert (refused.status, refused.json()) == (
            403,
            {"error": "client reader does not have the scope signing-key:b"},
        )
        assert ask(app, "POST", "/keysets/a/rotate", as_reader).status == 403
        # an unknown keyset is 403 to a client scoped to one keyset, 404 to a `*` scope
        assert ask(app, "GET", "/keysets/nope/signing-key", as_reader).status == 403
        unknown = ask(app, "GET", "/keysets/nope/status", as_watcher)
        assert (unknown.status, unknown.json()) == (404, {"error": "unknown keyset nope"})

        status = ask(app, "GET", "/keysets/b/status", as_watcher)
        assert status.status == 200
        assert status.headers["cache-control"] == "no-store"
        assert ask(app, "GET", "/keysets/b/signing-key", as_watcher).status == 403


def test_the_admin_token_reads_the_signing_key(running: Running) -> None:
    reply = ask(running.public, "GET", "/keysets/a/signing-key", BEARER)
    assert reply.status == 200
    assert reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert "d" in body["active"]  # the private key: admin only
    jwks = ask(running.public, "GET", "/keysets/a/jwks.json").json()
    assert body["active"]["kid"] in {key["kid"] for key in jwks["keys"]}
    first = ask(running.public, "GET", "/signing-key", BEARER).json()
    assert first["active"]["kid"] == body["active"]["kid"]


# -- admin: queries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "/keysets/a/rotate?later=true",
            "unknown query parameter 'later' (this endpoint accepts: now, force)",
        ),
        ("/keysets/a/rotate?now=maybe", "now must be true or false"),
        ("/keysets/a/rotate?force=true", "force=true goes with now=true"),
        (
            "/keysets/a/keys/somekid/revoke?now=true",
            "unknown query parameter 'now' (this endpoint accepts: none)",
        ),
        ("/keysets/a/rotate?" + "&".join(["now=true"] * 9), "a query takes at most 8 parameters"),
    ],
)
def test_a_query_the_endpoint_does_not_know_is_400(
    running: Running, target: str, message: str
) -> None:
    reply = ask(running.public, "POST", target, BEARER)
    assert (reply.status, reply.json()) == (400, {"error": message})


def test_a_query_is_checked_only_after_the_token(running: Running) -> None:
    assert ask(running.public, "POST", "/keysets/a/rotate?later=true").status == 401


# -- admin: actions ----------------------------------------------------------------------------


def test_rotate_and_revoke_write_and_the_jwks_follows(running: Running) -> None:
    app = running.public
    before = ask(app, "GET", "/keysets/b/jwks.json")
    active = ask(app, "GET", "/keysets/b/signing-key", BEARER).json()["active"]["kid"]

    rotated = ask(app, "POST", "/keysets/b/rotate?now=true&force=true", BEARER)
    assert rotated.status == 200
    body = rotated.json()
    assert body["keyset"] == "b"
    assert body["active"] != active  # the successor signs now
    assert [t["event"] for t in body["transitions"]].count("key.activated") == 1

    revoked = ask(app, "POST", f"/keysets/b/keys/{active}/revoke", BEARER)
    assert revoked.status == 200
    assert {"event": "key.revoked", "kid": active} in [
        {"event": t["event"], "kid": t["kid"]} for t in revoked.json()["transitions"]
    ]
    after = ask(app, "GET", "/keysets/b/jwks.json")
    assert after.headers["etag"] != before.headers["etag"]
    assert active not in {key["kid"] for key in after.json()["keys"]}

    missing = ask(app, "POST", "/keysets/b/keys/no-such-kid/revoke", BEARER)
    assert missing.status == 404


def test_a_body_announced_above_the_limit_is_413(running: Running) -> None:
    too_long = {"Content-Length": str(64 * 1024 + 1)}
    reply = ask(running.public, "POST", "/keysets/a/sign", {**BEARER, **too_long})
    assert reply.status == 413
    assert ask(running.public, "POST", "/keysets/a/sign", too_long).status == 401  # token first
