"""The audit trail: one ``admin.request`` line per admin request (counted in a real daemon's log),
the refusal limit (10 lines a second, then one ``admin.request.suppressed``), the counter."""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keyrotd.daemon.audit import Audit, Entry, RefusalLimit, remote_of, shown
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.state import Board
from tests.support.daemon import TOKEN, Daemon
from tests.support.waiting import wait_for

from .conftest import DaemonFactory
from .test_scopes import KEYSETS, add_client, scoped_daemon

FIELDS = {"client", "remote", "method", "keyset", "action", "status"}
REMOTE = re.compile(r"127\.0\.0\.1:\d+")


def audit_lines(daemon: Daemon, event: str = "admin.request") -> list[dict[str, Any]]:
    return [line for line in daemon.log_events() if line.get("event") == event]


def counted(daemon: Daemon) -> dict[tuple[str, str, str], float]:
    """``keyrotd_admin_requests_total`` by (client, action, code), from /metrics."""
    found: dict[tuple[str, str, str], float] = {}
    pattern = re.compile(
        r'^keyrotd_admin_requests_total\{action="([^"]+)",client="([^"]+)",code="(\d+)"\} (\S+)$'
    )
    scrape = daemon.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    for line in scrape.body.decode().splitlines():
        match = pattern.match(line)
        if match:
            action, client, code, value = match.groups()
            found[client, action, code] = float(value)
    return found


def test_every_admin_request_is_one_audit_line(daemon_factory: DaemonFactory) -> None:
    daemon = scoped_daemon(daemon_factory)
    issuer = add_client(daemon, "issuer-a", "signing-key:a")
    daemon.start()
    kid = daemon.admin("GET", "/keysets/a/signing-key", issuer).json()["active"]["kid"]
    requests = [  # (method, path, token, expected line: client, keyset, action, status)
        ("GET", "/keysets/b/signing-key", issuer, ("issuer-a", "b", "signing-key", 403)),
        ("POST", "/keysets/a/rotate", issuer, ("issuer-a", "a", "rotate", 403)),
        ("GET", "/signing-key", issuer, ("issuer-a", "a", "signing-key", 200)),
        ("GET", "/keysets/a/signing-key", "wrong", ("unknown", "a", "signing-key", 401)),
        ("POST", "/keysets/a/signing-key", issuer, ("issuer-a", "a", "signing-key", 405)),
        ("GET", "/keysets/nope/signing-key", TOKEN, ("admin", "nope", "signing-key", 404)),
        ("POST", "/keysets/b/rotate", TOKEN, ("admin", "b", "rotate", 200)),
        ("POST", f"/keysets/a/keys/{kid}/revoke", TOKEN, ("admin", "a", "revoke", 200)),
    ]
    for method, path, token, _ in requests:
        daemon.admin(method, path, token)
    daemon.get("/keysets/a/jwks.json")  # not an admin endpoint: not audited
    daemon.get("/metrics")

    expected = [("issuer-a", "a", "signing-key", 200)] + [line for *_, line in requests]
    methods = ["GET"] + [method for method, *_ in requests]
    # each line is written before its answer is sent: all are there now
    lines = audit_lines(daemon)
    assert [(e["client"], e["keyset"], e["action"], e["status"]) for e in lines] == expected
    assert [e["method"] for e in lines] == methods
    for line in lines:
        assert set(line) >= FIELDS, line
        assert type(line["status"]) is int and REMOTE.fullmatch(line["remote"]), line
    assert lines[-1]["kid"] == kid
    assert [e["level"] for e in lines] == ["info", "warning", "warning", "info"] + [
        "warning"
    ] * 3 + ["info", "info"]
    assert counted(daemon) == {
        ("issuer-a", "signing-key", "200"): 2,
        ("issuer-a", "signing-key", "403"): 1,
        ("issuer-a", "rotate", "403"): 1,
        ("issuer-a", "signing-key", "405"): 1,
        ("unknown", "signing-key", "401"): 1,
        ("admin", "signing-key", "404"): 1,
        ("admin", "rotate", "200"): 1,
        ("admin", "revoke", "200"): 1,
    }
    text = daemon.log_text()
    for secret in (issuer, TOKEN):
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text


def test_fifty_refusals_in_a_second_make_at_most_eleven_lines(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(keysets=KEYSETS).start()

    def refused(index: int) -> int:
        return daemon.admin("GET", "/keysets/a/signing-key", f"wrong-{index}").status

    with ThreadPoolExecutor(10) as pool:
        started = time.monotonic()
        statuses = list(pool.map(refused, range(50)))
        elapsed = time.monotonic() - started
    assert statuses == [401] * 50
    done = time.monotonic()
    suppressed = wait_for(
        lambda: audit_lines(daemon, "admin.request.suppressed"), 5, "admin.request.suppressed"
    )
    assert time.monotonic() - done <= 2.0  # within 2 s, with no further request
    lines = audit_lines(daemon)
    assert len(lines) + sum(e["count"] for e in suppressed) == 50
    if elapsed < 1.0:  # else the window moved on: more lines, as many suppressed fewer
        assert len(lines) == 10 and [e["count"] for e in suppressed] == [40]
    assert all(e["level"] == "warning" for e in suppressed)
    assert counted(daemon) == {("unknown", "signing-key", "401"): 50}
    assert daemon.admin("GET", "/keysets/a/signing-key").status == 200  # allowed: not limited
    wait_for(lambda: len(audit_lines(daemon)) == len(lines) + 1, 5, "the allowed request's line")


# -- in-process: the limit, remote addresses, escaping ------------------------------------------


def test_the_refusal_limit_is_a_sliding_window_of_ten_lines() -> None:
    limit = RefusalLimit()
    assert [limit.admit(100.0 + i / 100) for i in range(12)] == [True] * 10 + [False] * 2
    assert not limit.admit(100.99)  # the first line (100.0) is still within 1 s
    assert limit.admit(101.0)  # the first one left the window: one more
    assert not limit.admit(101.005)
    assert limit.admit(101.01)


def test_suppressed_refusals_are_flushed_by_the_timer() -> None:
    metrics = Metrics(lambda: Board().snapshot)
    timers: list[tuple[float, Any]] = []
    now = [50.0]
    audit = Audit(metrics, lambda: now[0], later=lambda delay, cb: timers.append((delay, cb)))
    entry = Entry("unknown", "unix", "GET", "a", "signing-key", 401)
    for _ in range(25):
        audit.record(entry)
    assert audit.suppressed == 15 and [delay for delay, _ in timers] == [1.0]
    audit.record(Entry("ci", "unix", "GET", "a", "signing-key", 200))  # allowed: logged
    assert audit.suppressed == 15
    timers[0][1]()
    assert audit.suppressed == 0
    audit.flush()  # nothing left: no second line
    body = metrics.render(client_names=True).decode()
    assert (
        'keyrotd_admin_requests_total{action="signing-key",client="unknown",code="401"} 25.0'
        in (body)
    )


def test_remote_is_ip_port_or_unix() -> None:
    assert remote_of({"client": "127.0.0.1:5123"}) == "127.0.0.1:5123"
    assert remote_of({"client": "[::1]:5123"}) == "[::1]:5123"
    assert remote_of({"client": ""}) == "unix"  # a socket path, or no name: a unix peer
    assert remote_of({"client": "/run/peer.sock"}) == "unix"
    assert remote_of({"client": ("10.0.0.1", 80)}) == "10.0.0.1:80"
    assert remote_of({"client": ("::1", 80)}) == "[::1]:80"


def test_path_text_cannot_forge_a_line() -> None:
    assert shown("default") == "default"
    assert "\n" not in shown("a\nkeyrotd: fake line") and shown("a\n") == "a\\n"
    assert len(shown("x" * 1000)) == 83
