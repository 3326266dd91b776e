"""What ``/metrics`` and the log may show: an observed URL without its query, fragment or user
info (a signed URL's query is a credential), and admin client names only to a token with a
``status`` scope (the full-power admin token has every scope), on the admin listener when there
is one. Real daemons over HTTP."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import TOKEN, Daemon
from tests.support.http import Reply, UnixConnection, exchange
from tests.support.waiting import wait_for

from .conftest import DaemonFactory
from .test_scopes import add_client, scoped_daemon

SIGNED = (
    "http://127.0.0.1:9/bucket/jwks.json?X-Amz-Credential=AKIAEXAMPLE%2F20261206"
    "&X-Amz-Signature=5ec4e7516a7a9ec0ffee#frag-secret"
)
SHOWN = "http://127.0.0.1:9/bucket/jwks.json"
ADMIN_FAMILY = "keyrotd_admin_requests"


def metrics(daemon: Daemon, token: str | None = None) -> str:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    reply = daemon.request("GET", "/metrics", headers=headers)
    assert reply.status == 200
    return reply.body.decode()


def test_an_observed_url_is_shown_without_its_query_fragment_or_user_info(
    daemon_factory: DaemonFactory,
) -> None:
    keyset = {
        "name": "main",
        "algorithm": "ES256",
        "rotation_period": "4s",
        "publish_ahead": "3s",
        "verifier_cache": "1s",
        "token_lifetime": "2s",
        "clock_skew": "0s",
        "observe": [SIGNED],
    }
    daemon = daemon_factory(keysets=[keyset]).start()
    wait_for(
        lambda: [e for e in daemon.log_events() if e.get("event") == "key.activation_held"],
        20,
        "the successor to be held",
        every=0.3,
    )
    failed = [e for e in daemon.log_events() if e.get("event") == "observe.failed"]
    assert failed and {e["url"] for e in failed} == {SHOWN}
    held = [e for e in daemon.log_events() if e.get("event") == "key.activation_held"]
    assert held[0]["urls"] == [SHOWN]
    text = metrics(daemon, TOKEN)
    assert f'keyrotd_observe_errors_total{{keyset="main",url="{SHOWN}"}}' in text
    for secret in ("X-Amz", "5ec4e7516a7a9ec0ffee", "AKIAEXAMPLE", "frag-secret"):
        assert secret not in text
        assert secret not in daemon.log_text()


def test_admin_client_names_only_to_a_token_with_a_status_scope(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = scoped_daemon(daemon_factory)
    reader = add_client(daemon, "issuer-a", "signing-key:a")
    daemon.start()
    assert daemon.admin("GET", "/keysets/a/signing-key", reader).status == 200
    for token in (None, "wrong", reader):
        text = metrics(daemon, token)
        assert ADMIN_FAMILY not in text and "issuer-a" not in text, token
        assert "keyrotd_ready 1.0" in text  # the rest is there
    text = metrics(daemon, TOKEN)
    assert 'client="issuer-a"' in text and f"# TYPE {ADMIN_FAMILY}_total counter" in text


def over_unix(path: Path, target: str, token: str | None) -> Reply:
    headers = None if token is None else {"Authorization": f"Bearer {token}"}
    return exchange(UnixConnection(path), "GET", target, headers)


def test_with_an_admin_listener_client_names_are_only_there(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    socket_path = tmp_path / "admin.sock"
    daemon = daemon_factory(server={"admin_listen": f"unix:{socket_path}"}).start()
    assert over_unix(socket_path, "/keysets/main/signing-key", TOKEN).status == 200
    assert ADMIN_FAMILY not in metrics(daemon, TOKEN)  # the public listener: never
    assert over_unix(socket_path, "/metrics", None).status == 401
    assert over_unix(socket_path, "/metrics", "wrong").status == 401
    answer = over_unix(socket_path, "/metrics", TOKEN)
    assert answer.status == 200 and 'client="admin"' in answer.body.decode()
    assert "keyrotd_ready 1.0" in answer.body.decode()
