"""What a request may carry to the daemon: query parameters of the admin endpoints (400 for an
unknown one, once the token is accepted), text that is not Latin-1, and encoded slashes in a
path segment (400 on every route, never routed as another path). Real daemons, real sockets."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest

from tests.support.daemon import TOKEN, Daemon

from .conftest import DaemonFactory
from .test_scopes import add_client, scoped_daemon


def audit_lines(daemon: Daemon) -> list[dict[str, Any]]:
    return [line for line in daemon.log_events() if line.get("event") == "admin.request"]


def raw_request(daemon: Daemon, method: str, target: bytes, token: str | None = TOKEN) -> int:
    """Send ``target`` as the request line's bytes (http.client refuses non-ASCII); the status."""
    auth = b"" if token is None else b"Authorization: Bearer " + token.encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(
            method.encode()
            + b" "
            + target
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", data)
    assert match, data[:200]
    return int(match.group(1))


def counted_rotates(daemon: Daemon, code: str) -> float:
    pattern = re.compile(
        rf'^keyrotd_admin_requests_total\{{action="rotate",client="admin",code="{code}"\}} (\S+)$'
    )
    metrics = daemon.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    for line in metrics.body.decode().splitlines():
        if match := pattern.match(line):
            return float(match.group(1))
    return 0.0


@pytest.mark.parametrize(
    "query", ["nw=true", "now=true&nw=1", "dry_run=1", "now=true&force=true&x="]
)
def test_an_unknown_query_parameter_of_rotate_is_400_and_changes_nothing(
    daemon: Daemon, query: str
) -> None:
    before = daemon.get("/keysets/main/jwks.json").body
    reply = daemon.admin("POST", f"/keysets/main/rotate?{query}")
    assert reply.status == 400, reply.body
    assert "error" in reply.json()
    assert daemon.get("/keysets/main/jwks.json").body == before
    assert [(e["action"], e["status"]) for e in audit_lines(daemon)] == [("rotate", 400)]


def test_an_unknown_query_parameter_is_400_only_once_the_token_is_accepted(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = scoped_daemon(daemon_factory)
    reader = add_client(daemon, "reader", "signing-key:a")
    daemon.start()
    assert daemon.admin("POST", "/keysets/a/rotate?nw=true", "wrong").status == 401
    assert daemon.admin("POST", "/keysets/a/rotate?nw=true", reader).status == 403
    assert daemon.admin("GET", "/keysets/a/signing-key?x=1", reader).status == 400
    assert daemon.admin("GET", "/signing-key?x=1", reader).status == 400
    assert daemon.admin("POST", "/keysets/a/keys/abc/revoke?now=true").status == 400
    lines = [(e["client"], e["action"], e["status"]) for e in audit_lines(daemon)]
    assert lines == [
        ("unknown", "rotate", 401),
        ("reader", "rotate", 403),
        ("reader", "signing-key", 400),
        ("reader", "signing-key", 400),
        ("admin", "revoke", 400),
    ]


def test_the_audit_line_of_a_rotate_says_whether_now_was_asked(daemon: Daemon) -> None:
    assert daemon.admin("POST", "/keysets/main/rotate").status == 200
    assert daemon.admin("POST", "/keysets/main/rotate?now=false").status == 200
    reply = daemon.admin("POST", "/keysets/main/rotate?now=true&force=true")
    assert reply.status in (200, 409), reply.body  # force is known to rotate
    assert daemon.admin("POST", "/keysets/main/rotate?now=maybe").status == 400
    assert [(e["status"], e.get("now")) for e in audit_lines(daemon)] == [
        (200, False),
        (200, False),
        (reply.status, True),
        (400, None),  # not understood: nothing was asked
    ]


def test_jwks_and_discovery_ignore_query_strings(daemon_factory: DaemonFactory) -> None:
    keysets: list[dict[str, object]] = [
        {"name": "main", "algorithm": "ES256", "issuer": "https://a.example/t1"}
    ]
    daemon = daemon_factory(keysets=keysets).start()
    for path in ("/.well-known/jwks.json", "/keysets/main/jwks.json", "/t1/.well-known/jwks.json"):
        assert daemon.get(f"{path}?cb=1&x=%C3%A9").body == daemon.get(path).body
    assert daemon.get("/t1/.well-known/openid-configuration?v=2").status == 200


@pytest.mark.parametrize(
    "target",
    [
        "/keysets/main/rotate?now=é".encode(),
        "/keysets/main/rotate?now=\u0100".encode(),
        "/keysets/main/rotate?\u0100=1".encode(),
        b"/keysets/main/rotate?now=%C3%A9",
        "/keysets/ma\u0100in/rotate".encode(),
        "/keysets/é/rotate".encode(),
    ],
)
def test_text_that_is_not_latin1_is_400_audited_and_counted(daemon: Daemon, target: bytes) -> None:
    assert raw_request(daemon, "POST", target, token="wrong") == 401
    assert raw_request(daemon, "POST", target) == 400
    assert [e["status"] for e in audit_lines(daemon)] == [401, 400]
    assert counted_rotates(daemon, "400") == 1
    log = daemon.log_text()
    assert "Traceback" not in log and '"status": 500' not in log
    assert daemon.get("/healthz").status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/keysets/main%2Fsigning-key"),
        ("GET", "/keysets/main%2fsigning-key"),
        ("POST", "/keysets/main%2Frotate"),
        ("POST", "/keysets/main/keys/x%2F..%2Frevoke"),
        ("GET", "/keysets/main%2Fjwks.json"),
        ("GET", "/.well-known%2Fjwks.json"),
        ("GET", "/%2Fhealthz"),
        ("GET", "/metrics%2F"),
        ("GET", "/nothing%2Fhere"),
    ],
)
def test_an_encoded_slash_is_400_on_every_route(daemon: Daemon, method: str, path: str) -> None:
    reply = daemon.admin(method, path)
    assert reply.status == 400, (path, reply.status, reply.body)
    assert "active" not in reply.json()
    assert not [e for e in audit_lines(daemon) if e["status"] == 200]
