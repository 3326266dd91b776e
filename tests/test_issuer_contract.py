"""The Python issuer against a real daemon and real storage (docs/issuers.md): ``iss`` from the
keyset's issuer, the token used as given less surrounding whitespace and never shown,
``next_activates_at``, and TLS or scheme errors that say what is wrong."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from keyrotd import KeyrotdError
from keyrotd.client import Issuer
from keyrotd.config import load_settings
from keyrotd.storage import open_storage
from tests.support.clock import ManualClock
from tests.support.daemon import TOKEN, Daemon, make_daemon
from tests.support.keysets import open_writer
from tests.test_issuer import make_ca

ISSUER = "https://auth.example/main"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def claims_of_header(token: str) -> str:
    """The kid a token names."""
    return str(jwt.get_unverified_header(token)["kid"])


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    keysets: list[dict[str, object]] = [
        {"name": "main", "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"},
        {"name": "plain", "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"},
    ]
    keysets[0]["issuer"] = ISSUER
    made = make_daemon(tmp_path_factory.mktemp("issuer"), keysets=keysets)
    made.start()
    yield made
    made.stop()


def test_signing_key_says_the_issuer_or_null(daemon: Daemon) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    main = json.loads(daemon.get("/keysets/main/signing-key", auth).body)
    plain = json.loads(daemon.get("/keysets/plain/signing-key", auth).body)
    assert (main["issuer"], plain["issuer"]) == (ISSUER, None)


def test_from_url_signs_with_iss_unless_the_claims_carry_one(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    with Issuer.from_url(url, keyset="main", token=TOKEN, background=False) as issuer:
        assert claims_of(issuer.sign({"sub": "alice"}))["iss"] == ISSUER
        assert claims_of(issuer.sign({"sub": "a", "iss": "https://other"}))["iss"] == (
            "https://other"
        )
    with Issuer.from_url(url, keyset="plain", token=TOKEN, background=False) as issuer:
        assert "iss" not in claims_of(issuer.sign({"sub": "alice"}))


def test_a_token_read_from_a_file_is_used_less_surrounding_whitespace(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    with Issuer.from_url(url, token=f"  {TOKEN}\n", background=False) as issuer:
        issuer.sign({"sub": "alice"})


@pytest.mark.parametrize("token", ["first-half\nsecond-half", "first-half second-half\x00"])
def test_a_token_never_shows_in_an_exception(daemon: Daemon, token: str) -> None:
    url = f"http://127.0.0.1:{daemon.port}"
    with pytest.raises(KeyrotdError) as raised:
        Issuer.from_url(url, token=token, background=False)
    text = f"{raised.value} {raised.value!r} {raised.value.message} {raised.value.hint}"
    assert "first-half" not in text and "second-half" not in text


def test_from_config_signs_with_the_keysets_issuer(tmp_path: Path) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n[[keysets]]\nname = "main"\n'
        f'algorithm = "ES256"\nissuer = "{ISSUER}"\n'
    )
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    open_writer(storage, settings.keyset()).apply()
    storage.close()
    with Issuer.from_config(config, background=False, environ={}) as issuer:
        assert claims_of(issuer.sign({"sub": "alice"}))["iss"] == ISSUER


def test_next_activates_at_is_the_switch_it_will_make(tmp_path: Path) -> None:
    config = tmp_path / "keyrotd.toml"
    config.write_text(
        f'[storage]\npath = "{tmp_path / "data"}"\n[[keysets]]\nname = "main"\n'
        'algorithm = "ES256"\nrotation_period = "1h"\npublish_ahead = "30m"\n'
    )
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    clock = ManualClock(START)
    manager = open_writer(storage, settings.keyset(), clock=clock)
    manager.apply()  # the first key
    clock.now = START + timedelta(minutes=31)
    manager.apply()  # its successor, published 30m ahead
    storage.close()
    successor = manager.view().successor
    assert successor is not None and successor.activates_at is not None
    switch = successor.activates_at
    with Issuer.from_config(config, clock=clock, background=False, environ={}) as issuer:
        assert issuer.next_activates_at == switch
        first = claims_of_header(issuer.sign({"sub": "a"}))
        clock.now = switch
        assert issuer.next_activates_at is None  # switched: nothing further known
        assert claims_of_header(issuer.sign({"sub": "a"})) == successor.kid != first


@pytest.fixture
def plain_http() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_https_to_a_plain_http_listener_says_so(plain_http: str) -> None:
    with pytest.raises(KeyrotdError) as raised:
        Issuer.from_url(f"https://{plain_http}", token="t", token_lifetime=60, timeout=5)
    assert not str(raised.value).endswith("is it up?")
    assert "TLS" in str(raised.value) and "http://" in raised.value.hint


def test_an_untrusted_certificate_says_to_give_the_ca(tmp_path: Path) -> None:
    _, context = make_ca(tmp_path, "keyrotd")
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(KeyrotdError) as raised:
            Issuer.from_url(
                f"https://localhost:{server.server_address[1]}",
                token="t",
                token_lifetime=60,
                timeout=5,
            )
    finally:
        server.shutdown()
        server.server_close()
    assert "certificate" in raised.value.message
    assert "ca_file" in raised.value.hint
    assert not str(raised.value).endswith("is it up?")


def test_http_to_an_https_listener_says_so(tmp_path: Path) -> None:
    _, context = make_ca(tmp_path, "keyrotd")
    raw = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    raw.socket = context.wrap_socket(raw.socket, server_side=True, do_handshake_on_connect=True)
    thread = threading.Thread(target=raw.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(KeyrotdError) as raised:
            Issuer.from_url(
                f"http://127.0.0.1:{raw.server_address[1]}",
                token="t",
                token_lifetime=60,
                timeout=5,
            )
    finally:
        raw.shutdown()
        raw.server_close()
    assert "https://" in raised.value.hint, str(raised.value)
    assert not str(raised.value).endswith("is it up?")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8080", "unix:run/admin.sock"])
def test_scheme_errors_say_what_is_wrong(url: str) -> None:
    with pytest.raises(KeyrotdError) as raised:
        Issuer.from_url(url, token="t", token_lifetime=60)
    assert not str(raised.value).endswith("is it up?")
    assert raised.value.exit_code == 2


def test_from_config_finds_no_store_and_never_advises_creating_keys(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "keyrotd.toml"
    config.parent.mkdir()
    config.write_text('[storage]\npath = "data"\n')
    with pytest.raises(KeyrotdError) as raised:
        Issuer.from_config(config, background=False, environ={})
    assert str(tmp_path / "etc" / "data") in raised.value.message
    assert "rotate" not in str(raised.value)
    assert not (tmp_path / "etc" / "data").exists()
