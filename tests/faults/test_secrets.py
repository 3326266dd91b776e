"""Secrets, without the daemon: for every algorithm, no private member in any CLI
output, JWKS, log line, error message or ``status``; files 0600 and directories 0700; every
flipped byte of a stored document detected.

The private values are the real ones: taken from ``keyrotd signing-key`` and from the store after
every command (pending keys included), then searched for in every output in base64url, base64,
hex and decimal forms (``helpers.secret_needles``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from keyrotd import logs
from keyrotd.cli import main
from keyrotd.errors import CorruptDocumentError, KeyrotdError
from keyrotd.lifecycle.commands import TICK, Revoke, Rotate
from keyrotd.model import ALGORITHMS, Keyset, from_json, to_json
from keyrotd.storage.file import FileStorage
from keyrotd.storage.sealing import seal
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.daemon import Daemon, free_port, start_daemon

from .crash_harness import POLICY
from .helpers import find_secrets, secret_needles

CONFIG = """
[storage]
path = "{store}"
encryption_key_file = "{key_file}"

[server]
refresh_interval = "1s"
jwks_max_age = "1s"

[logging]
level = "debug"
format = "{fmt}"

[[keysets]]
name = "default"
algorithm = "{alg}"
rotation_period = "1h"
publish_ahead = "10m"
token_lifetime = "5m"
clock_skew = "30s"
"""


class Operator:
    """Runs ``keyrotd`` commands in-process and keeps every output and every private JWK seen."""

    def __init__(self, tmp_path: Path, alg: str, fmt: str, capsys: pytest.CaptureFixture[str]):
        self.store = tmp_path / "store"
        self.key = os.urandom(32)
        key_file = tmp_path / "storage.key"
        key_file.write_text(base64.b64encode(self.key).decode())
        key_file.chmod(
            0o600
        )  # the file rule of README.md, Configuration refuses a world-readable key
        self.config = tmp_path / "keyrotd.toml"
        self.config.write_text(CONFIG.format(store=self.store, key_file=key_file, fmt=fmt, alg=alg))
        self.capsys = capsys
        self.outputs: dict[str, str] = {}
        self.private: list[dict[str, str]] = []

    def run(self, *argv: str, code: int = 0) -> str:
        status = main(["--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        assert status == code, (argv, out, err)
        self.collect_private_keys()
        label = " ".join(argv)
        if argv[0] == "signing-key":
            self.private.append(json.loads(out))
            self.outputs[label + " (stderr)"] = err
        else:
            self.outputs[label] = out
            self.outputs[label + " (stderr)"] = err
        return out

    def keyset(self) -> Keyset:
        stored = FileStorage(self.store, self.key).read("default")
        assert stored is not None
        return from_json(stored.data, stored.location)

    def collect_private_keys(self) -> None:
        if (self.store / "default.json").exists():
            self.private += [
                {**k.private_jwk, "kid": k.kid} for k in self.keyset().keys if k.private_jwk
            ]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_no_private_member_in_any_cli_output(
    alg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    op = Operator(tmp_path, alg, "json" if alg[0] in "RE" else "text", capsys)
    op.run("check-config")
    op.run("rotate")  # the first key, and a pending successor
    op.run("status")
    op.run("status", "--json")
    op.run("jwks")
    signing = json.loads(op.run("signing-key"))
    token = jwt.encode(
        {"sub": "alice", "aud": "api"},
        jwt.PyJWK.from_dict(signing).key,
        algorithm=alg,
        headers={"kid": signing["kid"]},
    )
    op.run("inspect", token, "--audience", "api")
    op.run("inspect", token, "--audience", "api", "--json")
    op.run("rotate", "--now", "--force")  # a warning log line, and a retired key
    op.run("signing-key")
    retired = [k.kid for k in op.keyset().keys if k.state.value == "retired"]
    op.run("inspect", token, "--audience", "api")  # signed by a key now retired: still valid
    op.run("revoke", retired[0])
    op.run("revoke", "no-such-kid", code=1)
    op.run("rotate")  # a new pending successor
    op.run("inspect", token, code=1)  # revoked key
    op.run("inspect", token[:-9] + "AAAAAAAAA", code=1)  # signature mismatch
    op.run("status", "--json")
    op.run("jwks")
    op.run("signing-key")

    needles = secret_needles(op.private)
    assert len({jwk["kid"] for jwk in op.private}) >= 3
    assert len(needles) >= 3 * (1 if alg in {"EdDSA"} or alg.startswith("ES") else 6)
    leaks = {label: find_secrets(text, needles) for label, text in op.outputs.items()}
    assert {label: found for label, found in leaks.items() if found} == {}
    # The signing key output itself is where the private key is meant to be.
    assert find_secrets(json.dumps(signing), needles)
    # The encrypted files hold no private value in any form.
    for path in op.store.iterdir():
        assert find_secrets(path.read_bytes(), needles) == [], path


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_private_member_in_any_log_line(fmt: str, tmp_path: Path) -> None:
    """Every lifecycle event and every error, at debug level, in both formats."""
    stream = io.StringIO()
    logs.configure(fmt, "debug", stream)
    try:
        storage = FileStorage(tmp_path)
        manager = KeysetWriter(storage, KeysetSpec("default", "RS256", 2048, POLICY))
        private: list[dict[str, str]] = []
        for command in (TICK, Rotate(), Rotate(now=True), TICK, Rotate(now=True)):
            outcome = manager.apply(command)
            private += [
                {**k.private_jwk, "kid": k.kid} for k in outcome.keyset.keys if k.private_jwk
            ]
        revoked = outcome.keyset.retired[0].kid
        manager.apply(Revoke(revoked))
        with pytest.raises(KeyrotdError):
            manager.apply(Revoke("unknown"))
    finally:
        logs.configure("json", "info")
    text = stream.getvalue()
    for event in ("key.created", "key.activated", "key.retired", "key.revoked"):
        assert event in text
    assert find_secrets(text, secret_needles(private)) == []


def test_an_error_about_a_private_member_does_not_echo_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A document whose private JWK is malformed (a digest-consistent edit) is refused by a
    message that names the field, never its value."""
    storage = FileStorage(tmp_path / "store")
    spec = KeysetSpec("default", "ES256", 2048, POLICY)
    keyset = KeysetWriter(storage, spec).apply().keyset
    private = [{**k.private_jwk, "kid": k.kid} for k in keyset.keys if k.private_jwk]
    document = json.loads(to_json(keyset))
    document["keys"][0]["private_jwk"]["d"] = [private[0]["d"]]  # a list, not a string
    (tmp_path / "store" / "default.json").write_bytes(
        seal("default", 2, json.dumps(document).encode(), None)
    )
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "store"}"\n')
    for argv in (["status"], ["jwks"], ["signing-key"], ["rotate"]):
        assert main(["--config", str(config), *argv]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "default.json" in err and err.count("\n") == 1
        assert find_secrets(err, secret_needles(private)) == []


# --- file and directory modes --------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_files_are_0600_and_directories_0700_whatever_the_umask(
    tmp_path: Path, encrypted: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "new" / "nested" / "store"
    storage = FileStorage(store, os.urandom(32) if encrypted else None)
    manager = KeysetWriter(storage, KeysetSpec("default", "EdDSA", 2048, POLICY))
    for command in (TICK, Rotate(), Rotate(now=True)):
        manager.apply(command)
    (store / ".default.json.tmp").write_bytes(b"")  # what a crashed writer leaves
    manager.apply(Rotate(now=True))

    for directory in (tmp_path / "new", tmp_path / "new" / "nested", store):
        assert mode(directory) == 0o700, directory
    names = sorted(p.name for p in store.iterdir())
    assert names == ["default.json", "default.lock"]
    for path in store.iterdir():
        assert mode(path) == 0o600, path


# --- tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_every_flipped_byte_of_a_stored_document_is_detected(
    tmp_path: Path, encrypted: bool
) -> None:
    """Each byte of the file, XORed with 0x01 and with 0x80 in turn: the document is refused as
    corrupt naming the file, a write on top of it refuses too, and the file is left as it was."""
    key = os.urandom(32) if encrypted else None
    storage = FileStorage(tmp_path, key)
    manager = KeysetWriter(storage, KeysetSpec("default", "ES256", 2048, POLICY))
    manager.apply()
    version = manager.apply(Rotate()).keyset
    assert version.pending
    path = tmp_path / "default.json"
    original = path.read_bytes()
    undetected = []
    for index in range(len(original)):
        for flip in (0x01, 0x80):
            damaged = bytearray(original)
            damaged[index] ^= flip
            path.write_bytes(bytes(damaged))
            try:
                storage.read("default")
            except CorruptDocumentError as error:
                message = str(error)
            else:
                undetected.append((index, flip))
                continue
            assert str(path) in message
    assert undetected == [], f"{len(undetected)} of {2 * len(original)} flips went unnoticed"

    damaged = bytearray(original)
    damaged[len(original) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptDocumentError):
        manager.apply(Rotate(now=True))
    assert path.read_bytes() == bytes(damaged)


# --- the daemon: JWKS, metrics, admin answers, logs, and the admin token -----------------------

ADMIN_TOKEN = "secrets-test-admin-token-9c2f4e1a7b3d"


@pytest.fixture(scope="module")
def every_algorithm_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One real daemon serving one keyset per algorithm, debug logs in JSON."""
    directory = tmp_path_factory.mktemp("daemon")
    token = directory / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    token.chmod(0o600)
    port = free_port()
    keysets = "".join(
        f'[[keysets]]\nname = "{alg}"\nalgorithm = "{alg}"\nrotation_period = "1h"\n'
        'publish_ahead = "10m"\ntoken_lifetime = "5m"\n'
        for alg in ALGORITHMS
    )
    config = directory / "keyrotd.toml"
    clients = directory / "clients.toml"
    config.write_text(
        f'[storage]\npath = "{directory / "store"}"\n'
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_token_file = "{token}"\n'
        f'admin_clients_file = "{clients}"\n'
        'refresh_interval = "1s"\njwks_max_age = "1s"\n[logging]\nlevel = "debug"\n' + keysets
    )
    add = ["--config", str(config), "client", "add", "issuer", "--scope", "signing-key:*"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*add, "--scope", "rotate:ES256"]) == 0
    daemon = start_daemon(config, port, log_path=directory / "daemon.log")
    daemon.client_token = out.getvalue().splitlines()[-1]  # type: ignore[attr-defined]
    yield daemon
    assert daemon.stop() == 0


def test_no_private_member_over_http_in_metrics_or_in_daemon_logs(
    every_algorithm_daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = every_algorithm_daemon
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    outputs: dict[str, bytes] = {}
    private: list[dict[str, str]] = []

    def signing_keys(alg: str) -> set[str]:
        reply = daemon.get(f"/keysets/{alg}/signing-key", auth)
        assert reply.status == 200
        body = reply.json()
        assert isinstance(body, dict)
        current = [jwk for jwk in (body["active"], body["next"]) if jwk]
        private.extend(current)
        return {jwk["kid"] for jwk in current}

    for alg in ALGORITHMS:
        signing_keys(alg)
        for label, method, path in (
            ("rotate", "POST", f"/keysets/{alg}/rotate"),
            ("rotate-now", "POST", f"/keysets/{alg}/rotate?now=true&force=true"),
            ("jwks", "GET", f"/keysets/{alg}/jwks.json"),
        ):
            reply = daemon.request(method, path, auth if method == "POST" else None)
            assert reply.status == 200, reply.body
            outputs[f"{alg} {label}"] = reply.body
        current = signing_keys(alg)
        jwks = json.loads(outputs[f"{alg} jwks"])
        retired = [k["kid"] for k in jwks["keys"] if k["kid"] not in current]
        reply = daemon.request("POST", f"/keysets/{alg}/keys/{retired[0]}/revoke", auth)
        outputs[f"{alg} revoke"] = reply.body
        assert reply.status == 200, reply.body
        for jwk in jwks["keys"]:
            assert not set(jwk) & {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}, jwk
        reply = daemon.request("POST", f"/keysets/{alg}/rotate", auth)  # a third key, pending
        outputs[f"{alg} rotate again"] = reply.body
        signing_keys(alg)
    for path in ("/.well-known/jwks.json", "/metrics", "/readyz", "/healthz", "/nope"):
        outputs[path] = daemon.get(path).body
    outputs["401"] = daemon.get("/keysets/RS256/signing-key").body

    needles = secret_needles(private)
    assert len({jwk["kid"] for jwk in private}) >= 3 * len(ALGORITHMS)
    leaks = {label: find_secrets(body, needles) for label, body in outputs.items()}
    assert {label: found for label, found in leaks.items() if found} == {}
    logs = daemon.log_text()
    assert "key.activated" in logs and "key.revoked" in logs
    assert find_secrets(logs, needles) == []


ALMOST_RIGHT = [
    None,  # no Authorization header
    "",
    "Bearer",
    "Bearer ",
    "Bearer wrong",
    f"Bearer {ADMIN_TOKEN[:-1]}",  # one character short
    f"Bearer {ADMIN_TOKEN}x",  # one character more
    f"Bearer {ADMIN_TOKEN[:-1]}{chr(ord(ADMIN_TOKEN[-1]) ^ 1)}",  # last character changed
    f"Bearer {ADMIN_TOKEN.upper()}",
    f"Bearer x{ADMIN_TOKEN}",
    f"Bearer {ADMIN_TOKEN[: len(ADMIN_TOKEN) // 2]}",
    f"Basic {ADMIN_TOKEN}",
    f"Token {ADMIN_TOKEN}",
    f"Bearer{ADMIN_TOKEN}",
    f"{ADMIN_TOKEN}",
    f"Bearer {ADMIN_TOKEN[:10]} {ADMIN_TOKEN[10:]}",
    f"Bearer {base64.b64encode(ADMIN_TOKEN.encode()).decode()}",
]


@pytest.mark.parametrize("authorization", ALMOST_RIGHT)
def test_admin_endpoints_reject_a_missing_wrong_or_almost_right_token(
    every_algorithm_daemon: Daemon, authorization: str | None
) -> None:
    daemon = every_algorithm_daemon
    headers = {} if authorization is None else {"Authorization": authorization}
    before = daemon.get("/keysets/ES256/jwks.json").body
    kid = json.loads(before)["keys"][0]["kid"]
    for method, path in (
        ("GET", "/keysets/ES256/signing-key"),
        ("POST", "/keysets/ES256/rotate"),
        ("POST", "/keysets/ES256/rotate?now=true"),
        ("POST", f"/keysets/ES256/keys/{kid}/revoke"),
        ("GET", "/keysets/nope/signing-key"),  # an unknown keyset says nothing either
    ):
        reply = daemon.request(method, path, headers)
        assert reply.status == 401, (method, path, reply.status, reply.body)
        assert reply.headers.get("www-authenticate", "").startswith("Bearer")
        assert b"kid" not in reply.body and b'"d"' not in reply.body
    assert daemon.get("/keysets/ES256/jwks.json").body == before  # nothing was done


def test_the_right_token_is_accepted(every_algorithm_daemon: Daemon) -> None:
    """The control for the test above: the same requests with the token succeed."""
    for authorization in (f"Bearer {ADMIN_TOKEN}", f"bearer {ADMIN_TOKEN}"):
        reply = every_algorithm_daemon.get(
            "/keysets/ES256/signing-key", {"Authorization": authorization}
        )
        assert reply.status == 200


def token_needles(*tokens: str) -> dict[str, str]:
    """A token in clear, base64 and as its SHA-256 (hex: what the clients file holds)."""
    needles: dict[str, str] = {}
    for index, token in enumerate(tokens):
        needles[token] = f"token {index}"
        needles[base64.b64encode(token.encode()).decode().rstrip("=")] = f"token {index} (base64)"
        needles[hashlib.sha256(token.encode()).hexdigest()] = f"token {index} sha256 (hex)"
    return needles


def test_no_token_hash_or_key_in_audit_lines_client_list_or_the_clients_file(
    every_algorithm_daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scoped client's allowed and refused requests, and refused ones without a token: the
    audit lines (every log line) hold no token, no token hash and no private value; nor does
    ``client list``; the clients file holds the client's hash and nothing else secret."""
    daemon = every_algorithm_daemon
    token: str = daemon.client_token  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {token}"}
    private: list[dict[str, str]] = []
    for alg in ALGORITHMS:
        reply = daemon.get(f"/keysets/{alg}/signing-key", auth)
        assert reply.status == 200, reply.body
        body = reply.json()
        assert isinstance(body, dict)
        private += [jwk for jwk in (body["active"], body["next"]) if jwk]
    kid = private[0]["kid"]
    time.sleep(1.1)  # the refusals of the tests before are out of the audit's 1 s window
    for method, path, headers, status in (
        ("POST", "/keysets/ES256/rotate", auth, 200),
        ("POST", "/keysets/RS256/rotate", auth, 403),
        ("POST", f"/keysets/{ALGORITHMS[0]}/keys/{kid}/revoke", auth, 403),
        ("GET", "/keysets/ES256/signing-key", {"Authorization": f"Bearer {token}x"}, 401),
        ("GET", "/keysets/ES256/signing-key", {"Authorization": f"Basic {ADMIN_TOKEN}"}, 401),
    ):
        assert daemon.request(method, path, headers).status == status, (method, path)

    config = daemon.log_path.parent / "keyrotd.toml"
    assert main(["--config", str(config), "client", "list"]) == 0
    listed, errors = capsys.readouterr()
    assert listed == "issuer signing-key:*,rotate:ES256\n" and errors == ""

    secrets = {**secret_needles(private), **token_needles(token, ADMIN_TOKEN)}
    logs = daemon.log_text()
    audited = [e for e in daemon.log_events() if e.get("event") == "admin.request"]
    assert {e["client"] for e in audited} >= {"issuer", "unknown"}
    assert {e["status"] for e in audited} >= {200, 401, 403}
    assert find_secrets(logs, secrets) == []
    assert "Bearer" not in logs and "authorization" not in logs.lower()
    assert find_secrets(listed, secrets) == []

    clients_file = daemon.log_path.parent / "clients.toml"
    assert mode(clients_file) == 0o600
    content = clients_file.read_text()
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert find_secrets(content, secrets) == [token_needles(token)[digest]]  # its hash only
    assert find_secrets(content, secret_needles(private)) == []
    for member in ("d", "p", "q", "dp", "dq", "qi", "k"):
        assert f'"{member}"' not in content and f"{member} =" not in content
