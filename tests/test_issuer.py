"""keyrotd.client.Issuer: schedule, switching, refresh, limits; tokens cross-checked with PyJWT."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
import pytest

from keyrotd import KeyrotdError
from keyrotd.cli import main as cli
from keyrotd.client import Issuer
from keyrotd.config import load_settings
from keyrotd.errors import TokenError
from keyrotd.keys import generate_key
from keyrotd.model import ALGORITHMS
from keyrotd.signing_key_format import SigningKeys, parse_signing_key
from keyrotd.storage import open_storage
from keyrotd.writer import KeysetWriter
from tests.support.clock import ManualClock
from tests.support.keysets import open_writer

if TYPE_CHECKING:
    from tests.support.daemon import Daemon

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NO_TIME_CHECKS = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}


def write_config(tmp_path: Path, **keyset: str) -> Path:
    """A config with a file store under ``tmp_path`` and a keyset of a few seconds' periods."""
    policy = {
        "algorithm": "ES256",
        "rotation_period": "10s",
        "publish_ahead": "4s",
        "token_lifetime": "5s",
        "clock_skew": "1s",
        "verifier_cache": "1s",
        **keyset,
    }
    lines = [
        "[storage]",
        f'path = "{tmp_path / "data"}"',
        "[server]",
        'refresh_interval = "1s"',
        'jwks_max_age = "1s"',
        "[[keysets]]",
        'name = "default"',
        *(f'{name} = "{value}"' for name, value in policy.items()),
    ]
    path = tmp_path / "keyrotd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def manager(config: Path, clock: ManualClock) -> Iterator[KeysetWriter]:
    """The writer side (what the daemon does), on the same store, with the fake clock."""
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    mgr = open_writer(storage, settings.keyset(), clock=clock)
    mgr.apply()
    yield mgr
    storage.close()


@pytest.fixture
def issuer(config: Path, manager: KeysetWriter, clock: ManualClock) -> Iterator[Issuer]:
    with Issuer.from_config(str(config), clock=clock, background=False, environ={}) as made:
        yield made


def verify(token: str, jwks: dict[str, Any], **options: Any) -> dict[str, Any]:
    """PyJWT's verdict, signature and kid; the time claims are checked by the caller."""
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[key.algorithm_name], options=NO_TIME_CHECKS, **options
    )
    return claims


def signing_keys_of(*, activates_at: datetime | None = None, alg: str = "ES256") -> SigningKeys:
    active = generate_key(alg)
    upcoming = generate_key(alg) if activates_at else None
    return SigningKeys(
        active={**active.private_jwk, "kid": active.kid, "alg": alg, "use": "sig"},
        next={**upcoming.private_jwk, "kid": upcoming.kid, "alg": alg, "use": "sig"}
        if upcoming
        else None,
        next_activates_at=activates_at,
        token_lifetime=timedelta(minutes=5),
    )


def public_jwks(*schedules: SigningKeys) -> dict[str, Any]:
    private = {"d", "p", "q", "dp", "dq", "qi"}
    jwks = [s.active for s in schedules] + [s.next for s in schedules if s.next]
    return {"keys": [{k: v for k, v in j.items() if k not in private} for j in jwks]}


class CountingSource:
    """A schedule source that counts its reads and can be made to fail."""

    def __init__(self, schedule: SigningKeys) -> None:
        self.schedule = schedule
        self.reads = 0
        self.failing = False

    def __call__(self) -> SigningKeys:
        self.reads += 1
        if self.failing:
            raise KeyrotdError("storage unreachable", "test")
        return self.schedule


# -- from_config over many rotations ----------------------------------------------------------


def test_from_config_signs_with_the_active_key_across_ten_rotations(
    manager: KeysetWriter, issuer: Issuer, clock: ManualClock
) -> None:
    """Every 250 ms for 11 rotation periods: the storage side ticks as the daemon would, the
    issuer refreshes at its own interval, and each token is PyJWT-valid against the JWKS of that
    instant and signed by the key that is active then."""
    assert issuer.refresh_interval == timedelta(seconds=1)  # publish_ahead 4s / 4
    kids: list[str] = []
    last_refresh = clock.now
    for _ in range(4 * 110):
        clock.advance(timedelta(seconds=0.25))
        manager.apply()
        if clock.now - last_refresh >= issuer.refresh_interval:
            assert issuer.refresh()
            last_refresh = clock.now
        token = issuer.sign({"sub": "alice"})
        keyset = manager.view()
        claims = verify(token, dict(keyset.jwks()))
        assert keyset.active is not None
        assert jwt.get_unverified_header(token)["kid"] == keyset.active.kid
        assert claims["iat"] == int(clock.now.timestamp())
        assert claims["exp"] - claims["iat"] == 5
        kids.append(keyset.active.kid)
    assert len(set(kids)) >= 11  # ten rotations at least


def test_switches_to_the_next_key_at_its_activation_time_without_a_round_trip(
    clock: ManualClock,
) -> None:
    activates_at = START + timedelta(seconds=30)
    schedule = signing_keys_of(activates_at=activates_at)
    source = CountingSource(schedule)
    assert schedule.next is not None
    with Issuer(source, source="test", clock=clock, background=False) as issuer:
        clock.now = activates_at - timedelta(microseconds=1)
        assert jwt.get_unverified_header(issuer.sign({}))["kid"] == schedule.active["kid"]
        assert issuer.signing_key()["kid"] == schedule.active["kid"]
        clock.now = activates_at
        token = issuer.sign({})
        assert jwt.get_unverified_header(token)["kid"] == schedule.next["kid"]
        assert issuer.signing_key() == dict(schedule.next)
        verify(token, public_jwks(schedule))
    assert source.reads == 1


def test_no_private_key_member_shows_in_the_repr_of_what_the_issuer_holds(
    clock: ManualClock,
) -> None:
    schedule = signing_keys_of(activates_at=START + timedelta(seconds=30))
    assert schedule.next is not None
    with Issuer(CountingSource(schedule), source="test", clock=clock, background=False) as issuer:
        held = repr(vars(issuer))
    assert schedule.active["kid"] in held
    keys = {"active": schedule.active, "next": schedule.next}
    leaked = [name for name, jwk in keys.items() if jwk["d"] in held]  # names only, never the key
    assert leaked == []


def test_keeps_signing_with_the_held_keys_while_storage_is_unreachable(
    manager: KeysetWriter, issuer: Issuer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.advance(timedelta(seconds=6))  # the successor is published 4s ahead of the 10s period
    manager.apply()
    assert issuer.refresh()
    keyset = manager.view()
    assert keyset.active is not None and keyset.pending
    successor = keyset.pending[0]
    document = Path(manager.storage.location("default"))
    document.write_bytes(b"garbage")  # storage now fails every read
    with caplog.at_level(logging.WARNING, logger="keyrotd.client"):
        assert not issuer.refresh()
    assert "cannot refresh" in caplog.text and str(document) in caplog.text
    assert jwt.get_unverified_header(issuer.sign({}))["kid"] == keyset.active.kid
    assert successor.activates_at is not None
    clock.now = successor.activates_at
    assert jwt.get_unverified_header(issuer.sign({}))["kid"] == successor.kid


def test_refresh_picks_up_an_emergency_rotation(
    manager: KeysetWriter, issuer: Issuer, clock: ManualClock
) -> None:
    from keyrotd.lifecycle.commands import Rotate

    before = issuer.signing_key()["kid"]
    clock.advance(timedelta(seconds=1))
    manager.apply(Rotate(now=True))
    assert issuer.signing_key()["kid"] == before  # not yet refreshed
    assert issuer.refresh()
    active = manager.view().active
    assert active is not None and issuer.signing_key()["kid"] == active.kid != before


# -- sign ----------------------------------------------------------------------------------------


def test_sign_sets_header_iat_exp_and_leaves_the_claims_alone(
    issuer: Issuer, manager: KeysetWriter, clock: ManualClock
) -> None:
    claims = {"sub": "alice", "aud": ["api", "web"], "scope": {"read": True}}
    copy = json.loads(json.dumps(claims))
    token = issuer.sign(claims, lifetime=3)
    assert claims == copy
    header = jwt.get_unverified_header(token)
    keyset = manager.view()
    assert keyset.active is not None
    assert header == {"alg": "ES256", "kid": keyset.active.kid, "typ": "JWT"}
    decoded = verify(token, dict(keyset.jwks()), audience="api")
    now = int(clock.now.timestamp())
    assert decoded == {**claims, "iat": now, "exp": now + 3}


def test_sign_adds_nbf_and_a_fresh_jti_when_asked(issuer: Issuer, clock: ManualClock) -> None:
    first = jwt.decode(
        issuer.sign({}, not_before=True, jti=True), options={"verify_signature": False}
    )
    second = jwt.decode(issuer.sign({}, jti=True), options={"verify_signature": False})
    assert first["nbf"] == first["iat"] == int(clock.now.timestamp())
    assert "nbf" not in second
    assert len(first["jti"]) >= 20 and first["jti"] != second["jti"]


@pytest.mark.parametrize(
    "lifetime",
    [5, 5.0, timedelta(seconds=5), 1, None],
    ids=["int", "float", "timedelta", "1s", "default"],
)
def test_lifetimes_up_to_token_lifetime_are_accepted(
    issuer: Issuer, lifetime: float | timedelta | None
) -> None:
    claims = jwt.decode(issuer.sign({}, lifetime=lifetime), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == (1 if lifetime == 1 else 5)


def test_a_lifetime_above_token_lifetime_is_refused(issuer: Issuer) -> None:
    with pytest.raises(TokenError) as refused:
        issuer.sign({}, lifetime=6)
    assert isinstance(refused.value, KeyrotdError)
    assert str(refused.value) == (
        "lifetime 6s is above the keyset's token_lifetime (5s): ask for a shorter lifetime, "
        "or raise token_lifetime in the keyset's configuration"
    )
    with pytest.raises(TokenError):
        issuer.sign({}, lifetime=timedelta(seconds=5, microseconds=1))


@pytest.mark.parametrize("lifetime", [0, 0.5, -1, float("nan"), float("inf"), True, "5"])
def test_nonsense_lifetimes_are_refused(issuer: Issuer, lifetime: Any) -> None:
    with pytest.raises(TokenError):
        issuer.sign({}, lifetime=lifetime)


@pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
def test_claims_the_issuer_sets_are_refused(issuer: Issuer, claim: str) -> None:
    with pytest.raises(TokenError, match=f"claims already hold {claim}, which the issuer sets"):
        issuer.sign({claim: 1})


def test_a_caller_jti_is_kept_unless_a_fresh_one_is_asked_for(issuer: Issuer) -> None:
    token = issuer.sign({"jti": "mine"})
    assert jwt.decode(token, options={"verify_signature": False})["jti"] == "mine"
    with pytest.raises(TokenError, match="jti"):
        issuer.sign({"jti": "mine"}, jti=True)


def test_claims_that_are_not_json_are_refused(issuer: Issuer) -> None:
    with pytest.raises(TokenError, match="the claims cannot be encoded"):
        issuer.sign({"when": datetime(2026, 1, 1, tzinfo=UTC)})


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_every_algorithm_verifies_with_pyjwt(alg: str, clock: ManualClock) -> None:
    schedule = signing_keys_of(alg=alg)
    with Issuer(lambda: schedule, source="test", clock=clock, background=False) as issuer:
        token = issuer.sign({"sub": "alice"}, lifetime=60)
    assert jwt.get_unverified_header(token) == {
        "alg": alg,
        "kid": schedule.active["kid"],
        "typ": "JWT",
    }
    assert verify(token, public_jwks(schedule))["sub"] == "alice"


def test_signing_from_many_threads_while_refreshing(clock: ManualClock) -> None:
    schedule = signing_keys_of(activates_at=START + timedelta(seconds=1))
    issuer = Issuer(lambda: schedule, source="test", clock=clock, background=False)
    tokens: list[str] = []
    lock = threading.Lock()

    def sign_many() -> None:
        made = [issuer.sign({"sub": "alice"}, lifetime=60) for _ in range(50)]
        with lock:
            tokens.extend(made)

    def refresh_many() -> None:
        for _ in range(50):
            issuer.refresh()

    threads = [threading.Thread(target=sign_many) for _ in range(8)]
    threads.append(threading.Thread(target=refresh_many))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == 400
    jwks = public_jwks(schedule)
    for token in tokens:
        verify(token, jwks)


# -- refresh thread, close ---------------------------------------------------------------------


def test_refresh_interval_is_a_quarter_of_publish_ahead_at_most_30s(tmp_path: Path) -> None:
    config = write_config(tmp_path, publish_ahead="24h", rotation_period="24h")
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    open_writer(storage, settings.keyset()).apply()
    storage.close()
    with Issuer.from_config(str(config), background=False, environ={}) as issuer:
        assert issuer.refresh_interval == timedelta(seconds=30)
    with Issuer.from_config(
        str(config), refresh_interval=2, background=False, environ={}
    ) as issuer:
        assert issuer.refresh_interval == timedelta(seconds=2)


def test_the_background_refresh_runs_and_close_stops_it(clock: ManualClock) -> None:
    source = CountingSource(signing_keys_of())
    refreshed = threading.Event()

    def fetch() -> SigningKeys:
        if source.reads >= 1:
            refreshed.set()
        return source()

    with Issuer(fetch, source="test", clock=clock, refresh_interval=0.05) as issuer:
        assert refreshed.wait(timeout=10)
        thread = issuer._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()
    issuer.close()  # idempotent


def test_from_config_without_keys_says_what_to_do(config: Path) -> None:
    (config.parent / "data").mkdir()  # a store without the keyset (no store: a reader refuses)
    with pytest.raises(KeyrotdError) as error:
        Issuer.from_config(str(config), background=False, environ={})
    assert "keyset default has no active key" in error.value.message
    assert error.value.hint == "start `keyrotd run`, or run `keyrotd rotate` once"


def test_from_config_with_an_unknown_keyset(config: Path, manager: KeysetWriter) -> None:
    with pytest.raises(KeyrotdError, match='unknown keyset "other"'):
        Issuer.from_config(str(config), keyset="other", background=False, environ={})


def test_from_config_without_the_file_names_it_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyrotdError) as error:
        Issuer.from_config("keyrotd.toml", keyset="default", background=False, environ={})
    assert str(error.value) == (
        f'Issuer.from_config: no configuration file "keyrotd.toml" in {tmp_path}: pass the path '
        "of the file the daemon runs with, or call Issuer.from_config() to find it as the CLI "
        "does ($KEYROTD_CONFIG, else ./keyrotd.toml, else the built-in defaults)"
    )
    absent = tmp_path / "etc" / "keyrotd.toml"
    with pytest.raises(
        KeyrotdError, match=f'^Issuer.from_config: no configuration file "{absent}": '
    ):
        Issuer.from_config(absent, background=False, environ={})


def test_from_config_without_a_path_finds_the_file_as_the_cli_does(
    config: Path, manager: KeysetWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(config.parent)  # ./keyrotd.toml
    active = manager.view().active
    assert active is not None
    with Issuer.from_config(background=False, environ={}) as issuer:
        assert issuer.signing_key()["kid"] == active.kid


def two_keysets(tmp_path: Path) -> Path:
    """A store whose first keyset is "api" (a keyset named "default" comes second)."""
    path = tmp_path / "two.toml"
    path.write_text(
        f'[storage]\npath = "{tmp_path / "two"}"\n'
        '[[keysets]]\nname = "api"\nalgorithm = "ES256"\n'
        '[[keysets]]\nname = "default"\nalgorithm = "ES256"\n'
    )
    for name in ("api", "default"):
        assert cli(["--config", str(path), "rotate", "--keyset", name]) == 0
    return path


def active_kid(config: Path, keyset: str) -> str:
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    try:
        active = open_writer(storage, settings.keyset(keyset)).view()
    finally:
        storage.close()
    assert active.active is not None
    return active.active.kid


def test_from_config_without_keyset_takes_the_first_keyset_as_the_cli_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = two_keysets(tmp_path)
    capsys.readouterr()
    assert cli(["--config", str(config), "signing-key"]) == 0
    cli_kid = json.loads(capsys.readouterr().out)["kid"]
    with Issuer.from_config(config, background=False, environ={}) as issuer:
        assert issuer.signing_key()["kid"] == cli_kid == active_kid(config, "api")
        assert cli_kid != active_kid(config, "default")


# -- from_url against a fake daemon ------------------------------------------------------------


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeDaemon:
    """A real HTTP server answering GET /signing-key and /keysets/default/signing-key (its first
    keyset) as the daemon does; ``requested`` lists the paths asked for."""

    def __init__(
        self,
        token: str = "s3cret",
        *,
        tls: ssl.SSLContext | None = None,
        unix: Path | None = None,
        keyset: str = "default",
    ) -> None:
        """HTTPS with ``tls``; on the unix socket ``unix`` (``url`` is then ``unix:PATH``)."""
        self.token = token
        self.keyset = keyset
        self.body: Callable[[], object] = lambda: {}
        self.status = 200
        self.requested: list[str] = []
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                daemon.requested.append(self.path)
                if self.path not in ("/signing-key", f"/keysets/{daemon.keyset}/signing-key"):
                    self.send_error(404)
                    return
                if self.headers.get("Authorization") != f"Bearer {daemon.token}":
                    self.send_error(401)
                    return
                if daemon.status != 200:
                    self.send_error(daemon.status)
                    return
                data = json.dumps(daemon.body()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server: socketserver.TCPServer | socketserver.UnixStreamServer
        if unix is not None:
            self.server = UnixHTTPServer(str(unix), Handler)
            self.url = f"unix:{unix}"
        else:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            port = self.server.server_address[1]
            self.url = f"http://127.0.0.1:{port}"
            if tls is not None:
                self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
                self.url = f"https://localhost:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_daemon() -> Iterator[FakeDaemon]:
    daemon = FakeDaemon()
    yield daemon
    daemon.close()


def response(schedule: SigningKeys, **extra: object) -> dict[str, object]:
    at = schedule.next_activates_at
    return {
        "active": dict(schedule.active),
        "next": dict(schedule.next) if schedule.next else None,
        "next_activates_at": at.isoformat().replace("+00:00", "Z") if at else None,
        **extra,
    }


def test_from_url_follows_the_endpoint_schedule(
    fake_daemon: FakeDaemon, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = signing_keys_of(activates_at=START + timedelta(seconds=10))
    assert schedule.next is not None
    fake_daemon.body = lambda: response(schedule, token_lifetime=300, publish_ahead=8)
    with Issuer.from_url(fake_daemon.url, token="s3cret", clock=clock, background=False) as issuer:
        assert issuer.refresh_interval == timedelta(seconds=2)
        assert jwt.get_unverified_header(issuer.sign({}))["kid"] == schedule.active["kid"]
        with pytest.raises(TokenError):
            issuer.sign({}, lifetime=301)
        fake_daemon.close()  # the daemon goes away: the held schedule keeps signing
        with caplog.at_level(logging.WARNING, logger="keyrotd.client"):
            assert not issuer.refresh()
        assert "cannot reach" in caplog.text or "cannot fetch" in caplog.text
        clock.advance(timedelta(seconds=10))
        token = issuer.sign({}, lifetime=300)
        assert jwt.get_unverified_header(token)["kid"] == schedule.next["kid"]
        verify(token, public_jwks(schedule))


def test_from_url_without_keyset_reads_the_first_keyset_endpoint(fake_daemon: FakeDaemon) -> None:
    schedule = signing_keys_of()
    fake_daemon.body = lambda: response(schedule, token_lifetime=60)
    with Issuer.from_url(fake_daemon.url, token="s3cret", background=False) as issuer:
        assert issuer.source == f"{fake_daemon.url}/signing-key"
        assert issuer.signing_key()["kid"] == schedule.active["kid"]
    with Issuer.from_url(
        fake_daemon.url, keyset="default", token="s3cret", background=False
    ) as issuer:
        assert issuer.source == f"{fake_daemon.url}/keysets/default/signing-key"
    assert fake_daemon.requested == ["/signing-key", "/keysets/default/signing-key"]


def test_from_url_accepts_a_sub_second_publish_ahead_sent_as_0(fake_daemon: FakeDaemon) -> None:
    """The daemon sends whole seconds rounded down: publish_ahead 0.5s arrives as 0."""
    fake_daemon.body = lambda: response(signing_keys_of(), token_lifetime=60, publish_ahead=0)
    with Issuer.from_url(fake_daemon.url, token="s3cret", background=False) as issuer:
        assert issuer.refresh_interval == timedelta(seconds=0.1)


def test_from_url_needs_the_lifetime_limit(fake_daemon: FakeDaemon, clock: ManualClock) -> None:
    schedule = signing_keys_of()
    fake_daemon.body = lambda: response(schedule)
    with pytest.raises(KeyrotdError, match="does not say the keyset's token_lifetime"):
        Issuer.from_url(fake_daemon.url, token="s3cret", background=False)
    with Issuer.from_url(
        fake_daemon.url, token="s3cret", token_lifetime=60, background=False
    ) as issuer:
        assert issuer.refresh_interval == timedelta(seconds=30)
        issuer.sign({}, lifetime=60)
        with pytest.raises(TokenError):
            issuer.sign({}, lifetime=61)


def test_from_url_takes_the_lower_of_the_given_and_served_limits(
    fake_daemon: FakeDaemon,
) -> None:
    fake_daemon.body = lambda: response(signing_keys_of(), token_lifetime=60)
    with (
        Issuer.from_url(
            fake_daemon.url, token="s3cret", token_lifetime=600, background=False
        ) as issuer,
        pytest.raises(TokenError, match=r"token_lifetime \(1m\)"),
    ):
        issuer.sign({}, lifetime=61)


def test_from_url_with_a_wrong_token(fake_daemon: FakeDaemon) -> None:
    with pytest.raises(KeyrotdError) as error:
        Issuer.from_url(fake_daemon.url, token="wrong", token_lifetime=60)
    assert error.value.message == f"{fake_daemon.url}/signing-key: HTTP 401 Unauthorized"
    assert error.value.hint == (
        "check the token: the daemon's server.admin_token_file, or one that `keyrotd client "
        "add` printed for a client still in server.admin_clients_file (keyrotd client list)"
    )


def test_from_url_with_an_unknown_keyset(fake_daemon: FakeDaemon) -> None:
    with pytest.raises(KeyrotdError, match="HTTP 404"):
        Issuer.from_url(fake_daemon.url, keyset="other", token="s3cret", token_lifetime=60)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:8080", "file:///etc/passwd"])
def test_from_url_accepts_http_only(url: str) -> None:
    with pytest.raises(KeyrotdError, match="is not an http"):
        Issuer.from_url(url, token="t", token_lifetime=60)


def test_from_url_when_nothing_listens() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    with pytest.raises(KeyrotdError, match="cannot fetch the signing-key response"):
        Issuer.from_url(f"http://127.0.0.1:{port}", token="t", token_lifetime=60, timeout=2)


def make_ca(tmp_path: Path, name: str) -> tuple[Path, ssl.SSLContext]:
    """A CA (its PEM file) and a server context for ``localhost`` with a certificate it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, Any] | None
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (issuer or (subject,))[0])])
            )
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
        )
        if issuer is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), False
            )
        return builder.sign(key if issuer is None else issuer[1], hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(f"{name} CA", ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("localhost", server_key, (f"{name} CA", ca_key))
    ca_file = tmp_path / f"{name}-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / f"{name}-server.pem"
    chain.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


def test_from_url_over_https_trusts_the_ca_file(tmp_path: Path) -> None:
    ca_file, context = make_ca(tmp_path, "keyrotd")
    other_ca, _ = make_ca(tmp_path, "other")
    daemon = FakeDaemon(tls=context)
    try:
        daemon.body = lambda: response(signing_keys_of(), token_lifetime=60)
        with Issuer.from_url(
            daemon.url, token="s3cret", ca_file=ca_file, background=False
        ) as issuer:
            assert issuer.source == f"{daemon.url}/signing-key"
            issuer.sign({"sub": "alice"})
        for trusted in (None, other_ca):  # the system's CAs, another CA: not this certificate
            with pytest.raises(KeyrotdError, match="CERTIFICATE_VERIFY_FAILED"):
                Issuer.from_url(
                    daemon.url, token="s3cret", ca_file=trusted, token_lifetime=60, timeout=5
                )
        assert daemon.requested == ["/signing-key"]
    finally:
        daemon.close()


def test_from_url_refuses_a_ca_file_without_https(tmp_path: Path) -> None:
    ca_file, _ = make_ca(tmp_path, "keyrotd")
    for url in ("http://127.0.0.1:1", f"unix:{tmp_path / 'admin.sock'}"):
        with pytest.raises(KeyrotdError, match="ca_file is for https:// URLs") as error:
            Issuer.from_url(url, token="t", ca_file=ca_file, token_lifetime=60)
        assert error.value.exit_code == 2
    with pytest.raises(KeyrotdError, match="cannot read ca_file"):
        Issuer.from_url("https://localhost:1", token="t", ca_file=tmp_path / "none.pem")


def test_from_url_over_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "admin.sock"
    daemon = FakeDaemon(unix=socket_path)
    try:
        schedule = signing_keys_of()
        daemon.body = lambda: response(schedule, token_lifetime=60)
        with Issuer.from_url(f"unix:{socket_path}", token="s3cret", background=False) as issuer:
            assert issuer.source == f"unix:{socket_path} /signing-key"
            assert issuer.signing_key()["kid"] == schedule.active["kid"]
        with Issuer.from_url(
            f"unix:{socket_path}", keyset="default", token="s3cret", background=False
        ) as issuer:
            verify(issuer.sign({"sub": "alice"}), public_jwks(schedule))
        with pytest.raises(KeyrotdError) as error:
            Issuer.from_url(f"unix:{socket_path}", token="wrong", token_lifetime=60)
        assert error.value.message == f"unix:{socket_path} /signing-key: HTTP 401 Unauthorized"
        assert daemon.requested == ["/signing-key", "/keysets/default/signing-key", "/signing-key"]
    finally:
        daemon.close()
    with pytest.raises(KeyrotdError, match="cannot fetch the signing-key response"):
        Issuer.from_url(f"unix:{tmp_path / 'gone.sock'}", token="t", token_lifetime=60)
    with pytest.raises(KeyrotdError, match="unix:/PATH"):
        Issuer.from_url("unix:relative.sock", token="t", token_lifetime=60)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "not a JSON object"),
        ({"active": None}, "active is not a JWK"),
        ({"active": {"kid": "k", "alg": "HS256", "d": "x"}}, "active is not a private JWK"),
        ({"active": {"kid": "k", "alg": "ES256", "x": "y"}}, "active is not a private JWK"),
        (
            {
                "active": {"kid": "k", "alg": "ES256", "d": "x"},
                "next_activates_at": "2026-01-01T00:00:00Z",
            },
            "both",
        ),
        (
            {"active": {"kid": "k", "alg": "ES256", "d": "x"}, "token_lifetime": "1h"},
            "token_lifetime is not",
        ),
        (
            {"active": {"kid": "k", "alg": "ES256", "d": "x"}, "token_lifetime": 0},
            "token_lifetime is not",
        ),
    ],
)
def test_malformed_signing_key_responses_are_refused(body: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_signing_key(body)


def test_a_garbage_response_is_an_error_naming_the_endpoint(fake_daemon: FakeDaemon) -> None:
    fake_daemon.body = lambda: {"active": {"kid": "k"}}
    with pytest.raises(KeyrotdError, match="not a signing-key response"):
        Issuer.from_url(fake_daemon.url, token="s3cret", token_lifetime=60)


# -- against a running daemon (`keyrotd run` as a subprocess) ----------------------------------


@pytest.fixture
def running_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """``keyrotd run`` (tests/daemon/harness.py) rotating an ES256 keyset every 2s."""
    from tests.support.daemon import make_daemon

    keyset = {
        "name": "default",
        "algorithm": "ES256",
        "rotation_period": "2s",
        "publish_ahead": "1.5s",
        "token_lifetime": "10s",
        "clock_skew": "1s",
        "verifier_cache": "0.5s",
    }
    server = {"refresh_interval": "0.5s", "jwks_max_age": "0.5s"}
    daemon = make_daemon(tmp_path, keysets=[keyset], server=server, log_level="warning")
    daemon.start()
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.kill()


@pytest.mark.slow
def test_issuers_follow_ten_rotations_of_a_running_daemon_across_a_restart(
    running_daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """Both issuers sign every 50 ms while the daemon rotates every 2s; PyJWKClient checks each
    token against the daemon's JWKS (exp and iat included, with the keyset's 1s leeway), caching
    it for jwks_max_age: each new key is there before an issuer signs with it (G2). Midway
    the daemon stops for a while and restarts: the issuers keep signing with the keys they hold,
    and those tokens verify once it is back."""
    from tests.support.daemon import TOKEN

    daemon = running_daemon
    url = f"http://127.0.0.1:{daemon.port}"
    # a verifier caching the JWKS for the daemon's jwks_max_age (0.5s)
    jwks = jwt.PyJWKClient(f"{url}/keysets/default/jwks.json", lifespan=0.5)
    from_url = Issuer.from_url(url, keyset="default", token=TOKEN)
    from_config = Issuer.from_config(str(daemon.config))
    assert from_config.refresh_interval == timedelta(seconds=0.375)  # publish_ahead 1.5s / 4
    # the daemon may send publish_ahead in whole seconds, rounded down: a shorter interval
    assert timedelta(seconds=0.25) <= from_url.refresh_interval <= from_config.refresh_interval
    kids: dict[str, set[str]] = {"url": set(), "config": set()}

    def sign_and_verify(seconds: float, *, verify_now: bool = True) -> list[str]:
        pending: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, issuer in (("url", from_url), ("config", from_config)):
                token = issuer.sign({"sub": name, "aud": "api"})
                kids[name].add(jwt.get_unverified_header(token)["kid"])
                pending.append(token)
            if verify_now:
                for token in pending:
                    key = jwks.get_signing_key_from_jwt(token)
                    jwt.decode(token, key, algorithms=["ES256"], audience="api", leeway=1)
                pending.clear()
            time.sleep(0.05)  # real time: the daemon's scheduler runs on it
        return pending

    with from_url, from_config:
        sign_and_verify(11)
        assert daemon.stop() == 0
        with caplog.at_level(logging.WARNING, logger="keyrotd.client"):
            signed_while_down = sign_and_verify(3, verify_now=False)
        assert "cannot refresh" in caplog.text
        daemon.start()
        for token in signed_while_down:
            key = jwks.get_signing_key_from_jwt(token)
            jwt.decode(token, key, algorithms=["ES256"], audience="api", leeway=1)
        sign_and_verify(12)
    assert len(kids["url"]) >= 11 and len(kids["config"]) >= 11  # ten rotations at least


def test_from_url_without_keyset_signs_with_the_first_keyset_of_a_running_daemon(
    tmp_path: Path,
) -> None:
    from tests.support.daemon import TOKEN, make_daemon

    keysets: list[dict[str, object]] = [
        {"name": "api", "algorithm": "ES256"},
        {"name": "default", "algorithm": "ES256"},
    ]
    daemon = make_daemon(tmp_path, keysets=keysets, log_level="warning").start()
    try:
        url = f"http://127.0.0.1:{daemon.port}"
        with Issuer.from_url(url, token=TOKEN, background=False) as issuer:
            token = issuer.sign({"sub": "alice"})
            jwks = daemon.get("/keysets/api/jwks.json").json()
            assert jwt.get_unverified_header(token)["kid"] == active_kid(daemon.config, "api")
            verify(token, jwks)
    finally:
        daemon.stop()


def test_from_url_with_a_scoped_client_token_signs_for_its_keyset_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``signing-key:api`` client (``keyrotd client add``) of a running daemon: its issuer's
    tokens verify with PyJWT against the served JWKS; another keyset is refused (403)."""
    from tests.support.daemon import make_daemon

    keysets: list[dict[str, object]] = [
        {"name": "api", "algorithm": "ES256"},
        {"name": "web", "algorithm": "RS256"},
    ]
    clients = tmp_path / "clients.toml"
    server = {"admin_clients_file": clients}
    daemon = make_daemon(tmp_path, keysets=keysets, server=server, log_level="warning")
    add = ["--config", str(daemon.config), "client", "add", "issuer-api"]
    assert cli([*add, "--scope", "signing-key:api"]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.port}"
        jwks = daemon.get("/keysets/api/jwks.json").json()
        for keyset in ("api", None):  # api is the first keyset: /signing-key too
            with Issuer.from_url(url, keyset, token=token, background=False) as issuer:
                signed = issuer.sign({"sub": "alice", "aud": "api"})
                assert jwt.get_unverified_header(signed)["kid"] == active_kid(daemon.config, "api")
                key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(signed)["kid"]]
                claims = jwt.decode(signed, key, algorithms=["ES256"], audience="api")
                assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 3600
        with pytest.raises(KeyrotdError) as refused:
            Issuer.from_url(url, "web", token=token, background=False)
        assert refused.value.message == f"{url}/keysets/web/signing-key: HTTP 403 Forbidden"
        assert "signing-key:KEYSET" in refused.value.hint
    finally:
        daemon.stop()


def test_from_url_does_not_follow_a_redirect_with_the_token(fake_daemon: FakeDaemon) -> None:
    """The bearer token goes to the daemon only: a redirect elsewhere is an error."""
    target = fake_daemon.url

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"{target}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        fake_daemon.body = lambda: response(signing_keys_of(), token_lifetime=60)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(KeyrotdError, match="HTTP 302"):
            Issuer.from_url(url, token="s3cret", background=False)
        assert fake_daemon.requested == []
    finally:
        server.shutdown()
        server.server_close()


def node_issuer(tmp_path: Path) -> Path:
    """The Node issuer of docs/issuers.md, as a file."""
    doc = (Path(__file__).parent.parent / "docs" / "issuers.md").read_text()
    script = tmp_path / "issuer.mjs"
    script.write_text(doc.split("```js\n", 1)[1].split("```", 1)[0])
    return script


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_node_issuer_of_the_docs_signs_with_a_scoped_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/issuers.md's script with a ``signing-key:api`` token: over TCP to a running daemon,
    and (relaying that daemon's answer) over a unix socket and over HTTPS with its CA file; each
    token verifies with PyJWT against the daemon's JWKS. Without the CA file HTTPS fails."""
    from tests.support.daemon import make_daemon

    keysets: list[dict[str, object]] = [
        {"name": "web", "algorithm": "RS256"},
        {"name": "api", "algorithm": "PS256"},
    ]
    server = {"admin_clients_file": tmp_path / "clients.toml"}
    daemon = make_daemon(tmp_path / "d", keysets=keysets, server=server, log_level="warning")
    assert (
        cli(["--config", str(daemon.config), "client", "add", "n", "--scope", "signing-key:api"])
        == 0
    )
    token = capsys.readouterr().out.splitlines()[-1]
    token_file = tmp_path / "issuer.token"
    token_file.write_text(token + "\n")
    script = node_issuer(tmp_path)
    ca_file, context = make_ca(tmp_path, "keyrotd")
    relays = [
        FakeDaemon(token, unix=tmp_path / "admin.sock", keyset="api"),
        FakeDaemon(token, tls=context, keyset="api"),
    ]
    daemon.start()
    try:
        for relay in relays:
            relay.body = lambda: daemon.admin("GET", "/keysets/api/signing-key", token).json()

        def run(url: str, **env: str) -> subprocess.CompletedProcess[str]:
            environ = {"PATH": os.environ["PATH"], "KEYROTD_URL": url, "KEYSET": "api"}
            environ["KEYROTD_TOKEN_FILE"] = str(token_file)
            return subprocess.run(
                ["node", str(script)],
                env={**environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        jwks = jwt.PyJWKSet.from_dict(daemon.get("/keysets/api/jwks.json").json())
        for url, env in (
            (f"http://127.0.0.1:{daemon.port}", {}),
            (relays[0].url, {}),
            (relays[1].url, {"KEYROTD_CA_FILE": str(ca_file)}),
        ):
            done = run(url, **env)
            assert done.returncode == 0, (url, done.stderr)
            signed = done.stdout.strip()
            key = jwks[jwt.get_unverified_header(signed)["kid"]]
            claims = jwt.decode(signed, key, algorithms=["PS256"], audience="api")
            assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 3600
            assert token not in done.stdout + done.stderr
        refused = run(relays[1].url)  # no CA file: the system's CAs do not know this one
        assert refused.returncode != 0 and "certificate" in refused.stderr
        other = run(f"http://127.0.0.1:{daemon.port}", KEYSET="web")
        assert other.returncode != 0 and "HTTP 403" in other.stderr
    finally:
        for relay in relays:
            relay.close()
        daemon.stop()
