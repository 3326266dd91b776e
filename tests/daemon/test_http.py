"""The public endpoints over real HTTP: JWKS caching headers, 304, errors, discovery, metrics."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

from keyrotd.config import load_settings
from keyrotd.lifecycle.due import next_transition
from keyrotd.lifecycle.planner import view
from keyrotd.storage import open_storage
from tests.support.daemon import Daemon
from tests.support.keysets import open_writer

from .conftest import DaemonFactory


def max_age(reply_headers: dict[str, str]) -> int:
    match = re.fullmatch(r"public, max-age=(\d+)", reply_headers["cache-control"])
    assert match, reply_headers["cache-control"]
    return int(match[1])


def seconds_to_next_transition(daemon: Daemon, keyset: str) -> float:
    """From storage, as the daemon sees it: the next scheduled change of the keyset's JWKS."""
    settings = load_settings(str(daemon.config), environ={})
    storage = open_storage(settings.storage)
    spec = settings.keyset(keyset)
    now = datetime.now(UTC)
    stored = open_writer(storage, spec).load().keyset
    upcoming = next_transition(view(stored, spec.policy, now), spec.policy)
    assert upcoming is not None
    return (upcoming - now).total_seconds()


def test_jwks_is_served_with_a_strong_etag_and_public_keys_only(daemon: Daemon) -> None:
    reply = daemon.get("/.well-known/jwks.json")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert re.fullmatch(r'"[0-9a-f]{32}"', reply.headers["etag"])
    keys = reply.json()["keys"]
    assert len(keys) == 2  # the first key (active) and its published successor
    for key in keys:
        assert key["use"] == "sig" and key["alg"] == "ES256"
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)
    same = daemon.get("/keysets/main/jwks.json")
    assert same.body == reply.body and same.headers["etag"] == reply.headers["etag"]


def test_if_none_match_answers_304_for_every_matching_form(daemon: Daemon) -> None:
    etag = daemon.get("/.well-known/jwks.json").headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', f'W/"x" , W/{etag}', "*"):
        reply = daemon.get("/.well-known/jwks.json", headers={"If-None-Match": header})
        assert reply.status == 304, header
        assert reply.body == b""
        assert reply.headers["etag"] == etag
        assert "max-age=" in reply.headers["cache-control"]
    for header in ('"other"', etag[:-2] + '"', "W/" + etag[1:]):
        reply = daemon.get("/.well-known/jwks.json", headers={"If-None-Match": header})
        assert reply.status == 200, header


def test_max_age_is_capped_by_jwks_max_age(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(server={"jwks_max_age": "7s"}).start()
    assert seconds_to_next_transition(daemon, "main") > 60
    assert max_age(daemon.get("/.well-known/jwks.json").headers) == 7


def test_max_age_never_reaches_past_the_next_transition(daemon_factory: DaemonFactory) -> None:
    # successor due 4s after the first key activates; jwks_max_age would allow 60s
    keyset = {
        "name": "fast",
        "algorithm": "ES256",
        "rotation_period": "70s",
        "publish_ahead": "66s",
    }
    daemon = daemon_factory(keysets=[keyset], server={"jwks_max_age": "60s"}).start()
    seen = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        before = seconds_to_next_transition(daemon, "fast")
        served = max_age(daemon.get("/keysets/fast/jwks.json").headers)
        after = seconds_to_next_transition(daemon, "fast")
        assert served <= 60
        assert served <= max(0, math.floor(max(before, after)))
        seen.append(served)
        time.sleep(0.25)
    assert min(seen) <= 1 < max(seen)  # it counted down to the change, then grew again


def test_head_is_get_without_a_body(daemon: Daemon) -> None:
    reply = daemon.request("HEAD", "/.well-known/jwks.json")
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["etag"] == daemon.get("/.well-known/jwks.json").headers["etag"]


def test_unknown_paths_and_methods_get_json_errors(daemon: Daemon) -> None:
    for path in ("/", "/nope", "/keysets/main", "/keysets/main/jwks.json/x", "/.well-known/"):
        reply = daemon.get(path)
        assert reply.status == 404, path
        assert reply.headers["content-type"] == "application/json"
        assert "error" in reply.json()
    reply = daemon.get("/keysets/other/jwks.json")
    assert reply.status == 404 and reply.json() == {"error": "unknown keyset other"}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/.well-known/jwks.json", "/healthz", "/metrics"):
            reply = daemon.request(method, path, body=b"{}")
            assert reply.status == 405, (method, path)
            assert reply.headers["allow"] == "GET, HEAD"
            assert reply.json() == {"error": "method not allowed"}


def test_request_bodies_are_ignored(daemon: Daemon) -> None:
    reply = daemon.request("GET", "/.well-known/jwks.json", body=b"x" * 100_000)
    assert reply.status == 200
    assert daemon.get("/healthz").status == 200  # the server is fine afterwards


def test_health_and_readiness(daemon: Daemon) -> None:
    assert daemon.get("/healthz").json() == {"status": "ok"}
    ready = daemon.get("/readyz")
    assert ready.json() == {"status": "ready", "keysets": ["main"], "degraded": []}
    assert ready.headers["cache-control"] == "no-store"


def test_openid_configuration_only_with_an_issuer(daemon_factory: DaemonFactory) -> None:
    plain = daemon_factory("plain").start()
    assert plain.get("/.well-known/openid-configuration").status == 404
    keyset = {"name": "idp", "algorithm": "PS256", "issuer": "https://auth.example.com/"}
    with_issuer = daemon_factory("issuer", keysets=[keyset]).start()
    reply = with_issuer.get("/.well-known/openid-configuration")
    assert reply.status == 200
    document = reply.json()
    assert document["issuer"] == "https://auth.example.com/"
    assert document["jwks_uri"] == "https://auth.example.com/.well-known/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["PS256"]


def test_metrics_are_prometheus_text_named_keyrotd(daemon: Daemon) -> None:
    reply = daemon.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.body.decode()
    names = set(re.findall(r"^(keyrotd_[a-z_]+)", text, re.MULTILINE))
    assert {
        "keyrotd_active_key_age_seconds",
        "keyrotd_next_transition_seconds",
        "keyrotd_keys",
        "keyrotd_rotations_total",
        "keyrotd_rotation_failures_total",
        "keyrotd_transitions_total",
        "keyrotd_storage_failures_total",
        "keyrotd_storage_last_success_timestamp_seconds",
        "keyrotd_ready",
    } <= names
    assert 'keyrotd_keys{keyset="main",state="active"} 1.0' in text
    assert 'keyrotd_keys{keyset="main",state="pending"} 1.0' in text
    assert "keyrotd_ready 1.0" in text
    assert "keyrotd_process_resident_memory_bytes" in text
    assert all(line.startswith(("keyrotd_", "# ")) for line in text.splitlines())


def test_a_path_is_percent_decoded_once(daemon: Daemon) -> None:
    """The server hands the app a decoded path: decoding it again would make ``%2561`` an ``a``
    (path confusion in front of a proxy that filters on the decoded path)."""
    name = daemon.get("/.well-known/jwks.json")
    assert name.status == 200
    assert daemon.get("/keysets/m%61in/jwks.json").body == name.body  # %61 is "a"
    twice = daemon.get("/keysets/m%2561in/jwks.json")  # %25 is "%": the keyset "m%61in"
    assert twice.status == 404, twice.body
