"""Propagation-gated activation in a running daemon (docs/guarantees.md), over real HTTP.

The observed URL is a small caching front run by the test: while "stuck" it keeps serving the
copy it fetched first (as a CDN that ignores the origin's Cache-Control would), with
``max-age=2``; once released it passes the daemon's JWKS through.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from keyrotd.client import Issuer
from keyrotd.daemon.observe_fetch import ObserveError, fetch
from tests.support.daemon import TOKEN, Daemon, free_port
from tests.support.http import metric
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

Route = tuple[int, dict[str, str], bytes]
"""An HTTP answer: status, headers, body."""


class Origin:
    """A local HTTP server answering each path from ``routes``, else from ``fallback``."""

    def __init__(self, fallback: Callable[[], Route] = lambda: (404, {}, b"")) -> None:
        self.routes: dict[str, Route] = {}
        self.seen_headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen_headers.append(dict(self.headers))
                code, headers, body = outer.routes.get(self.path) or fallback()
                self.send_response(code)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class StuckCache:
    """A caching front for the daemon's JWKS that can be held on its first copy."""

    def __init__(self, origin: Daemon) -> None:
        self.origin = origin
        self.stuck = True
        self.copy: bytes | None = None
        cached = {"Content-Type": "application/json", "Cache-Control": "public, max-age=2"}
        self.server = Origin(lambda: (200, cached, self.answer()))
        self.url = f"{self.server.base}/jwks.json"

    def answer(self) -> bytes:
        if self.copy is None or not self.stuck:
            self.copy = self.origin.get("/.well-known/jwks.json", timeout=2).body
        return self.copy

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def gated(daemon_factory: DaemonFactory) -> Iterator[tuple[Daemon, StuckCache]]:
    daemon = daemon_factory(
        keysets=[
            {
                "name": "main",
                "algorithm": "ES256",
                "rotation_period": "6s",
                "publish_ahead": "3s",
                "token_lifetime": "2s",
                "clock_skew": "0s",
                "verifier_cache": "1s",
            }
        ]
    )
    cache = StuckCache(daemon)
    text = daemon.config.read_text()
    daemon.config.write_text(text + f"observe = {json.dumps([cache.url])}\n")
    yield daemon.start(), cache
    cache.close()


def signing_key(daemon: Daemon) -> dict[str, Any]:
    reply = daemon.admin("GET", "/signing-key")
    assert reply.status == 200
    return reply.json()  # type: ignore[no-any-return]


def status(daemon: Daemon) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "status", "--json", "--config", str(daemon.config)],
        capture_output=True,
        check=True,
        cwd=daemon.workdir,
        env=daemon.env,
    )
    [keyset] = json.loads(done.stdout)["keysets"]
    return keyset  # type: ignore[no-any-return]


def kid(jwk: object) -> str:
    assert isinstance(jwk, dict)
    return str(jwk["kid"])


def parse(value: object) -> datetime:
    assert isinstance(value, str)
    return datetime.fromisoformat(value)


def test_a_successor_is_held_until_the_observed_url_serves_it(
    gated: tuple[Daemon, StuckCache],
) -> None:
    daemon, cache = gated
    first = kid(signing_key(daemon)["active"])
    # The successor is published at 3s and due at 6s; the cache keeps the first copy.
    held = wait_for(
        lambda: (s := status(daemon))["held"] and s, 20, "the successor to be held", every=0.3
    )
    successor = held["held"]["kid"]
    assert held["held"] == {"kid": successor, "lacking": [cache.url]}
    assert held["next_activates_at"] is None
    [pending] = [k for k in held["keys"] if k["state"] == "pending"]
    assert pending["activates_at"] is None
    assert pending["propagation"]["summary"].startswith(f"seen at 0/1 URLs, missing at {cache.url}")
    # issuers accept a successor without a time, and keep signing with the active key
    with Issuer.from_url(f"http://127.0.0.1:{daemon.port}", token=TOKEN) as issuer:
        assert jwt.get_unverified_header(issuer.sign({"sub": "a"}))["kid"] == first
    with Issuer.from_config(str(daemon.config)) as issuer:
        assert jwt.get_unverified_header(issuer.sign({"sub": "a"}))["kid"] == first
    schedule = signing_key(daemon)
    assert kid(schedule["active"]) == first
    assert kid(schedule["next"]) == successor
    assert schedule["next_activates_at"] is None
    wait_for(
        lambda: metric(daemon, 'keyrotd_activation_held{keyset="main"}') == 1.0, 5, "held gauge"
    )
    time.sleep(2)  # well past the scheduled time: still the first key
    assert kid(signing_key(daemon)["active"]) == first
    holds = [e for e in daemon.log_events() if e.get("event") == "key.activation_held"]
    assert len(holds) == 1 and holds[0]["urls"] == [cache.url] and holds[0]["kid"] == successor

    cache.stuck = False
    released = time.time()
    confirmed = wait_for(
        lambda: (s := signing_key(daemon))["next_activates_at"] and s, 10, "confirmation"
    )
    activates_at = parse(confirmed["next_activates_at"]).timestamp()
    # T + H, H = max(verifier_cache 1s, the max-age=2 of the answers lacking it)
    assert activates_at >= released + 2
    [event] = [e for e in daemon.log_events() if e.get("event") == "key.confirmed"]
    assert event["kid"] == successor
    wait_for(lambda: kid(signing_key(daemon)["active"]) == successor, 15, "the switch")
    assert time.time() >= activates_at
    assert status(daemon)["held"] is None
    assert metric(daemon, 'keyrotd_activation_held{keyset="main"}') == 0.0
    assert metric(daemon, 'keyrotd_propagation_seconds_count{keyset="main"}') == 1.0


def test_an_unreachable_observed_url_holds_and_is_counted(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        keysets=[
            {
                "name": "main",
                "algorithm": "ES256",
                "rotation_period": "4s",
                "publish_ahead": "3s",
                "verifier_cache": "1s",
                "token_lifetime": "2s",
                "clock_skew": "0s",
                "observe": ["http://127.0.0.1:9/jwks.json"],
            }
        ]
    ).start()
    first = kid(signing_key(daemon)["active"])
    wait_for(lambda: status(daemon)["held"], 20, "the successor to be held", every=0.3)
    url = "http://127.0.0.1:9/jwks.json"
    errors = metric(daemon, f'keyrotd_observe_errors_total{{keyset="main",url="{url}"}}')
    assert errors is not None and errors >= 1
    failures = [e for e in daemon.log_events() if e.get("event") == "observe.failed"]
    assert failures and failures[0]["url"] == url and "unreachable" in failures[0]["error"]
    assert kid(signing_key(daemon)["active"]) == first


# -- end to end through a real caching proxy ---------------------------------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
PERIOD = 3.0
"""rotation_period = publish_ahead: each successor is published as its predecessor activates."""
VERIFIER_CACHE = 1.0
PROXY_KEEPS = 2 * PERIOD
"""nginx keeps each answer twice as long as publish_ahead, whatever keyrotd's Cache-Control says."""


class Nginx:
    """nginx with proxy_cache in front of a daemon: told to ignore the origin's headers and keep
    every answer ``PROXY_KEEPS``, or (``honour_origin``) as config/nginx-jwks.conf does."""

    def __init__(self, workdir: Path, origin_port: int, *, honour_origin: bool = False) -> None:
        assert NGINX is not None
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        temp = " ".join(
            f"{name}_temp_path {workdir / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        caching = (
            "proxy_cache_revalidate on;"
            if honour_origin
            else "proxy_ignore_headers Cache-Control Expires; "
            f"proxy_cache_valid 200 {int(PROXY_KEEPS)}s;"
        )
        config = workdir / "nginx.conf"
        config.write_text(
            f"""daemon off;
master_process off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    proxy_cache_path {workdir / "cache"} keys_zone=jwks:1m;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://127.0.0.1:{origin_port};
            proxy_cache jwks;
            proxy_cache_lock on;
            {caching}
        }}
    }}
}}
"""
        )
        self.process = subprocess.Popen(
            [NGINX, "-p", str(workdir), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 10, "nginx to listen")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # nginx answers (502 until the daemon listens)
        except OSError:
            return False

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(5)


class StrictVerifier:
    """Keeps each JWKS for VERIFIER_CACHE and never refetches early, even on an unknown kid."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str, Any] = {}
        self.fetched = -math.inf

    def verify(self, token: str) -> None:
        if time.monotonic() - self.fetched >= VERIFIER_CACHE:
            with urllib.request.urlopen(self.url, timeout=2) as answer:
                document = json.loads(answer.read())
            self.keys = {k["kid"]: jwt.PyJWK(k) for k in document["keys"]}
            self.fetched = time.monotonic()
        kid = jwt.get_unverified_header(token)["kid"]
        if kid not in self.keys:
            raise jwt.InvalidTokenError(f"unknown kid {kid}")
        jwt.decode(token, self.keys[kid].key, algorithms=["ES256"])


@dataclass
class Traffic:
    """What the issuer signed and the verifiers said, and when nginx first served each kid."""

    first_signed: dict[str, float] = field(default_factory=dict)
    first_served: dict[str, float] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    signed: int = 0


def run_traffic(daemon: Daemon, proxy: Nginx, rotations: int, budget: float) -> Traffic:
    """Sign every 100 ms from the signing-key endpoint and verify each token through nginx,
    until ``rotations`` new kids signed (or ``budget`` seconds)."""
    traffic = Traffic()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(proxy.url, timeout=2) as answer:
                for key in json.loads(answer.read())["keys"]:
                    traffic.first_served.setdefault(key["kid"], time.time())
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    pyjwt = jwt.PyJWKClient(proxy.url, cooldown_duration=VERIFIER_CACHE)
    strict = StrictVerifier(proxy.url)
    deadline = time.monotonic() + budget
    with Issuer.from_url(f"http://127.0.0.1:{daemon.port}", token=TOKEN) as issuer:
        while len(traffic.first_signed) <= rotations and time.monotonic() < deadline:
            token = issuer.sign({"sub": "alice"})
            kid = jwt.get_unverified_header(token)["kid"]
            traffic.first_signed.setdefault(kid, time.time())
            traffic.signed += 1
            for name, verify in (
                (
                    "PyJWKClient",
                    lambda t: jwt.decode(
                        t, pyjwt.get_signing_key_from_jwt(t).key, algorithms=["ES256"]
                    ),
                ),
                ("strict", strict.verify),
            ):
                try:
                    verify(token)
                except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
                    traffic.rejected.append(f"{name}: {kid}: {exc}")
            time.sleep(0.1)
    stop.set()
    watcher.join(5)
    return traffic


@pytest.fixture
def behind_nginx(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> Iterator[Callable[[bool], tuple[Daemon, Nginx]]]:
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    made: list[Nginx] = []

    def start(observe: bool) -> tuple[Daemon, Nginx]:
        daemon = daemon_factory(
            keysets=[
                {
                    "name": "main",
                    "algorithm": "ES256",
                    "rotation_period": f"{PERIOD:g}s",
                    "publish_ahead": f"{PERIOD:g}s",
                    "token_lifetime": "2s",
                    "clock_skew": "0s",
                    "verifier_cache": f"{VERIFIER_CACHE:g}s",
                }
            ]
        )
        proxy = Nginx(tmp_path / "nginx", daemon.port)
        made.append(proxy)
        if observe:
            daemon.config.write_text(
                daemon.config.read_text() + f"observe = [{json.dumps(proxy.url)}]\n"
            )
        return daemon.start(), proxy

    yield start
    for proxy in made:
        proxy.close()


def test_without_observe_a_caching_proxy_makes_verifiers_reject_tokens(
    behind_nginx: Callable[[bool], tuple[Daemon, Nginx]],
) -> None:
    daemon, proxy = behind_nginx(False)
    traffic = run_traffic(daemon, proxy, rotations=3, budget=20)
    print(f"without observe: {len(traffic.rejected)} of {traffic.signed} verifications rejected")
    assert traffic.rejected, "time alone was enough this time: the proxy test cannot fail"


def test_with_observe_no_token_is_rejected_through_a_caching_proxy(
    behind_nginx: Callable[[bool], tuple[Daemon, Nginx]],
) -> None:
    daemon, proxy = behind_nginx(True)
    traffic = run_traffic(daemon, proxy, rotations=3, budget=45)
    print(f"with observe: {len(traffic.rejected)} of {traffic.signed} verifications rejected")
    assert len(traffic.first_signed) >= 4, f"only {len(traffic.first_signed) - 1} rotations"
    assert traffic.rejected == []
    holds = [e for e in daemon.log_events() if e.get("event") == "key.activation_held"]
    assert holds
    first_kid = min(traffic.first_signed, key=traffic.first_signed.__getitem__)
    margins = {
        kid: signed - traffic.first_served[kid]
        for kid, signed in traffic.first_signed.items()
        if kid != first_kid
    }
    print(
        f"holds: {len(holds)}; first signed after nginx served it (s): {sorted(margins.values())}"
    )
    # the watcher polls every 0.1 s: it may see a new copy up to that much late
    assert all(margin >= VERIFIER_CACHE - 0.1 for margin in margins.values()), margins


def test_each_observed_url_is_watched_until_it_drops_a_revoked_kid(
    gated: tuple[Daemon, StuckCache],
) -> None:
    daemon, cache = gated
    revoked = kid(signing_key(daemon)["active"])
    cache.answer()  # the stuck cache holds a copy with the kid
    reply = daemon.admin("POST", f"/keysets/main/keys/{revoked}/revoke")
    assert reply.status == 200
    time.sleep(2.5)  # the stuck cache keeps serving the revoked kid: nothing is reported
    assert not [e for e in daemon.log_events() if e.get("event") == "key.revocation_seen"]
    cache.stuck = False
    [seen] = wait_for(
        lambda: [e for e in daemon.log_events() if e.get("event") == "key.revocation_seen"],
        10,
        "key.revocation_seen",
    )
    assert seen["kid"] == revoked and seen["url"] == cache.url
    assert seen["delay"] >= 2.5
    count = 'keyrotd_revocation_propagation_seconds_count{keyset="main"}'
    assert metric(daemon, count) == 1.0


# -- fetching an observed URL as a verifier would ----------------------------------------------


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


JWKS = json.dumps({"keys": [{"kid": "a", "kty": "EC"}, {"kid": "b", "kty": "EC"}]}).encode()


def test_fetch_reads_the_kids_and_the_longest_cache_lifetime(origin: Origin) -> None:
    cache = {"Cache-Control": "public, max-age=5, s-maxage=60"}
    origin.routes["/j"] = (200, cache, JWKS)
    answer = fetch(origin.base + "/j", timeout=2)
    assert answer.kids == frozenset({"a", "b"})
    assert answer.max_age == timedelta(seconds=60)
    sent = {k.lower() for k in origin.seen_headers[-1]}
    assert not sent & {"cache-control", "pragma"}  # no cache-busting


def test_fetch_follows_three_redirects_and_no_more(origin: Origin) -> None:
    origin.routes["/j"] = (200, {}, JWKS)
    for n in range(4):
        target = "/j" if n == 0 else f"/r{n - 1}"
        origin.routes[f"/r{n}"] = (302, {"Location": target}, b"")
    assert fetch(origin.base + "/r2", timeout=2).kids == frozenset({"a", "b"})  # 3 redirects
    with pytest.raises(ObserveError, match="HTTP 302"):
        fetch(origin.base + "/r3", timeout=2)  # 4


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        ((500, {}, b"oops"), "HTTP 500"),
        ((200, {}, b"<html>"), "not JSON"),
        ((200, {}, b'{"kid": "a"}'), "not a JWKS"),
        ((200, {}, b" " * (1024 * 1024 + 1)), "larger than 1 MiB"),
        ((302, {"Location": "file:///etc/passwd"}, b""), "HTTP 302"),  # not followed
    ],
)
def test_fetch_refuses_what_is_not_a_jwks(origin: Origin, route: Route, problem: str) -> None:
    origin.routes["/j"] = route
    with pytest.raises(ObserveError, match=problem):
        fetch(origin.base + "/j", timeout=2)
