"""The status page (``GET /status``) and ``GET /keysets/{name}/status`` of a running daemon.

One daemon serves three keysets: ``steady`` (nothing wrong), ``gated`` (its successor held: the
one URL it observes serves a JWKS without it, as a stale CDN would) and ``broken`` (its document
corrupted after the first read: storage failing, the last good JWKS still served). The page is
loaded by a real headless Chromium (Debian ``chromium``) through its Basic challenge, and the
test reads what a person would see: the text and the SVG shapes of each state.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from keyrotd.cli import main
from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.http import UnixConnection, exchange, local_server, metric
from tests.support.waiting import wait_for

from .conftest import DaemonFactory

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class StaleJwks(BaseHTTPRequestHandler):
    """An observed URL that never serves the successor: a JWKS without any key."""

    def do_GET(self) -> None:
        body = b'{"keys": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "public, max-age=1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@dataclass(frozen=True)
class Site:
    daemon: Daemon
    observed: str
    tokens: dict[str, str]


def add_client(daemon: Daemon, name: str, *scopes: str) -> str:
    """``keyrotd client add``: the new client's token (the last line it prints)."""
    out = io.StringIO()
    argv = ["--config", str(daemon.config), "client", "add", name]
    argv += [arg for scope in scopes for arg in ("--scope", scope)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return out.getvalue().splitlines()[-1]


def status_json(daemon: Daemon, name: str) -> dict[str, Any]:
    config = ["--config", str(daemon.config)]
    done = subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "status", "--json", "--keyset", name, *config],
        capture_output=True,
        check=True,
        cwd=daemon.workdir,
        env=daemon.env,
    )
    [entry] = json.loads(done.stdout)["keysets"]
    return entry  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("status-page")
    with local_server(StaleJwks) as base:
        observed = f"{base}/jwks.json"
        hour = {"algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
        gated = {
            "name": "gated",
            "algorithm": "ES256",
            "rotation_period": "4s",
            "publish_ahead": "3s",
            "verifier_cache": "1s",
            "token_lifetime": "2s",
            "clock_skew": "0s",
            "observe": [observed],
        }
        daemon = make_daemon(
            workdir / "d<i>&",  # shown in locations and errors: escaped, never markup
            keysets=[{"name": "steady", **hour}, gated, {"name": "broken", **hour}],
            server={"admin_clients_file": workdir / "d<i>&" / "clients.toml"},
        )
        tokens = {
            "watch": add_client(daemon, "watch", "status:*"),
            "partial": add_client(daemon, "partial", "status:steady"),
            "ops": add_client(daemon, "ops", "rotate:*", "signing-key:*"),
        }
        daemon.start()
        try:
            (daemon.data / "broken.json").write_text("{ not a keyset document")
            wait_for(
                lambda: "broken" in daemon.get("/readyz").json()["degraded"], 20, "broken failing"
            )
            wait_for(lambda: status_json(daemon, "gated")["held"], 30, "gated held", every=0.5)
            yield Site(daemon, observed, tokens)
        finally:
            daemon.stop()


def basic(token: str, user: str = "me") -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def section(dom: str, name: str) -> str:
    """The part of the page about keyset ``name``."""
    start = dom.index(f'<section id="keyset-{name}"')
    return dom[start : dom.index("</section>", start)]


def shapes(part: str, tag: str, kind: str) -> int:
    return len(re.findall(rf'<{tag}[^>]* class="{kind}"', part))


def page_requests(net_log: Path, origin: str) -> list[str]:
    """The URLs the page made the browser request (not the browser's own background ones)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    started = [e.get("params", {}) for e in log["events"] if e["type"] == start]
    return [
        str(params["url"])
        for params in started
        if "url" in params and origin in params.get("network_isolation_key", "")
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_browser_shows_every_state_of_three_keysets(site: Site, tmp_path: Path) -> None:
    daemon = site.daemon
    origin = f"http://127.0.0.1:{daemon.port}"
    screenshot, net_log = tmp_path / "status.png", tmp_path / "net-log.json"
    browser = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--log-net-log={net_log}",
            "--window-size=412,2400",  # a phone's width
            f"--screenshot={screenshot}",
            "--dump-dom",
            f"http://viewer:{site.tokens['watch']}@127.0.0.1:{daemon.port}/status",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    dom = browser.stdout
    assert browser.returncode == 0 and "keyrotd status" in dom, browser.stderr[-2000:]
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert "for client <b>watch</b>" in dom
    assert 'name="viewport"' in dom and 'http-equiv="refresh"' in dom

    steady = section(dom, "steady")
    assert '<span class="ok">ok</span>' in steady and "<dd>storage</dd>" in steady
    assert shapes(steady, "rect", "signing") == 2  # the active key, and the successor's future
    assert shapes(steady, "rect", "published") == 1  # the successor (the first signed at once)
    assert shapes(steady, "rect", "retired") == 1  # the active key's retirement, projected
    assert shapes(steady, "line", "now") == 1 and shapes(steady, "line", "next") == 1
    assert "starts signing" in steady and '<span class="ok">no</span>' in steady
    assert re.search(r"\(in 59m\d+s\): \S+ starts signing", steady)

    gated = section(dom, "gated")
    assert '<span class="bad">held</span>: successor' in gated
    lacking = rf"<code>{site.observed}</code> lacks it since \d{{4}}-\d\d-\d\dT[\d:]{{8}}Z"
    assert re.search(lacking, gated) and "signs from awaiting confirmation" in gated
    assert shapes(gated, "rect", "signing") >= 1 and shapes(gated, "line", "now") == 1

    broken = section(dom, "broken")
    assert '<span class="bad">failing</span>' in broken and "serving the last good read" in broken
    assert "d&lt;i&gt;&amp;/data/broken.json" in broken and "<i>" not in dom
    assert shapes(broken, "rect", "signing") >= 1

    requested = page_requests(net_log, "http://127.0.0.1")
    assert requested and all(url.startswith(f"{origin}/status") for url in requested)
    private = daemon.admin("GET", "/keysets/steady/signing-key").json()
    secrets = [TOKEN, *site.tokens.values(), private["active"]["d"], private["next"]["d"]]
    assert not [secret for secret in secrets if secret in dom]


def test_the_page_challenges_a_browser_and_answers_each_client_its_keysets(site: Site) -> None:
    daemon = site.daemon
    challenge = daemon.get("/status")
    assert challenge.status == 401
    assert challenge.headers["www-authenticate"].startswith("Basic ")
    # the challenge is this page's only: the JSON endpoints keep answering Bearer
    assert daemon.get("/keysets/steady/status").headers["www-authenticate"].startswith("Bearer")
    assert daemon.get("/status", basic("wrong-token")).status == 401

    page = daemon.get("/status", basic(site.tokens["watch"]))
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp
    text = page.body.decode()
    assert not re.search(r"<script|\bsrc=|\bhref=|url\(|@import", text)
    assert all(f'id="keyset-{name}"' in text for name in ("steady", "gated", "broken"))

    bearer = {"Authorization": f"Bearer {site.tokens['partial']}"}
    partial = daemon.get("/status", bearer).body.decode()
    assert 'id="keyset-steady"' in partial
    assert 'id="keyset-gated"' not in partial and 'id="keyset-broken"' not in partial

    refused = daemon.get("/status", basic(site.tokens["ops"]))
    assert refused.status == 403 and "no status scope" in refused.body.decode()
    audited = [e for e in daemon.log_events() if e.get("event") == "admin.request"]
    assert {"client": "ops", "action": "status", "status": 403}.items() <= audited[-1].items()


def test_a_keysets_status_is_its_entry_of_status_json(site: Site) -> None:
    daemon = site.daemon
    for name in ("steady", "gated"):
        reply = daemon.admin("GET", f"/keysets/{name}/status", site.tokens["watch"])
        assert reply.status == 200 and reply.headers["cache-control"] == "no-store"
        served, printed = reply.json(), status_json(daemon, name)
        served.pop("next_transition_in"), printed.pop("next_transition_in")  # "now" differs
        assert served == printed
    assert daemon.admin("GET", "/keysets/gated/status", site.tokens["partial"]).status == 403
    assert daemon.admin("GET", "/keysets/steady/status", site.tokens["ops"]).status == 403
    assert daemon.admin("POST", "/keysets/steady/status", site.tokens["watch"]).status == 405


def test_the_page_is_on_the_admin_listener_only_when_there_is_one(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    socket_path = tmp_path / "admin.sock"
    daemon = daemon_factory(server={"admin_listen": f"unix:{socket_path}"}).start()
    assert daemon.get("/status", basic(TOKEN)).status == 404
    page = exchange(UnixConnection(socket_path), "GET", "/status", basic(TOKEN))
    assert page.status == 200 and b'id="keyset-main"' in page.body


def test_the_hold_is_measured_in_seconds_for_the_alert_rules(site: Site) -> None:
    held = metric(site.daemon, 'keyrotd_activation_held_seconds{keyset="gated"}')
    assert held is not None and held > 0
    assert metric(site.daemon, 'keyrotd_activation_held_seconds{keyset="steady"}') == 0
