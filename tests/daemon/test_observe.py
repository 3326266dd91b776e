"""Propagation-gated activation in a running daemon (CONTRACT section 9), over real HTTP.

The observed URL is a small caching front run by the test: while "stuck" it keeps serving the
copy it fetched first (as a CDN that ignores the origin's Cache-Control would), with
``max-age=2``; once released it passes the daemon's JWKS through.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from keyrotd.client import Issuer

from .conftest import DaemonFactory
from .harness import TOKEN, Daemon, wait_for


class StuckCache:
    """A caching front for the daemon's JWKS that can be held on its first copy."""

    def __init__(self, origin: Daemon) -> None:
        self.origin = origin
        self.stuck = True
        self.copy: bytes | None = None
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body = outer.answer()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=2")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self) -> bytes:
        if self.copy is None or not self.stuck:
            self.copy = self.origin.get("/.well-known/jwks.json", timeout=2).body
        return self.copy

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


def signing_key(daemon: Daemon) -> dict[str, object]:
    reply = daemon.admin("GET", "/signing-key")
    assert reply.status == 200
    return reply.json()  # type: ignore[no-any-return]


def status(daemon: Daemon) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "status", "--json", "--config", str(daemon.config)],
        capture_output=True,
        check=True,
        cwd=daemon.workdir,
        env=daemon.env,
    )
    [keyset] = json.loads(done.stdout)["keysets"]
    return keyset  # type: ignore[no-any-return]


def metric(daemon: Daemon, line_start: str) -> float | None:
    for line in daemon.get("/metrics").body.decode().splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


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
    successor = held["held"]["kid"]  # type: ignore[index]
    assert held["held"] == {"kid": successor, "lacking": [cache.url]}
    assert held["next_activates_at"] is None
    [pending] = [k for k in held["keys"] if k["state"] == "pending"]  # type: ignore[attr-defined]
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
