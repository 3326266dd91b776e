"""keyrotd.admin_clients: the clients file, its file rule, and the registry that authenticates
tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from keyrotd.admin_clients import (
    ACTIONS,
    Client,
    Registry,
    Scope,
    build_registry,
    load_clients_file,
    load_registry,
    parse_clients,
)
from keyrotd.errors import ConfigError

TOKENS = ("ci-token-" + "a" * 40, "deploy-token-" + "b" * 40, "ops-token-" + "c" * 40)


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def table(name: str, token: str, *scopes: str) -> str:
    listed = ", ".join(f'"{scope}"' for scope in scopes)
    return f'[[clients]]\nname = "{name}"\ntoken_sha256 = "{sha256(token)}"\nscopes = [{listed}]\n'


THREE = (
    table("ci", TOKENS[0], "rotate:default", "signing-key:default")
    + table("deploy", TOKENS[1], "signing-key:*")
    + table("ops", TOKENS[2], "revoke:*", "rotate:*")
)


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    return write_private(tmp_path / "clients.toml", THREE)


def test_a_clients_file_reads_into_frozen_clients(clients_file: Path) -> None:
    ci, deploy, ops = load_clients_file(clients_file)
    assert (ci.name, ci.token_sha256) == ("ci", sha256(TOKENS[0]))
    assert ci.scopes == (Scope("rotate", "default"), Scope("signing-key", "default"))
    assert deploy.scope_text == "signing-key:*"
    assert ops.scope_text == "revoke:*,rotate:*"
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.name = "other"  # type: ignore[misc]


def test_allows_follows_the_scopes(clients_file: Path) -> None:
    ci, deploy, ops = load_clients_file(clients_file)
    assert ci.allows("rotate", "default") and ci.allows("signing-key", "default")
    assert not ci.allows("revoke", "default")
    assert not ci.allows("rotate", "other")
    assert deploy.allows("signing-key", "any-keyset")
    assert not deploy.allows("rotate", "default")
    assert ops.allows("revoke", "x") and ops.allows("rotate", "y")
    assert not ops.allows("signing-key", "x")
    assert not ops.allows("delete", "x")


def test_an_admin_token_is_the_client_admin_with_every_scope(clients_file: Path) -> None:
    token_file = write_private(
        clients_file.with_name("admin.token"), "  the-admin-token-of-more-than-32-characters\n"
    )
    registry = load_registry(token_file, clients_file)
    admin = registry.authenticate(b"Bearer the-admin-token-of-more-than-32-characters")
    assert admin is not None and admin.name == "admin"
    assert all(admin.allows(action, "anything") for action in ACTIONS)
    assert [client.name for client in registry.clients] == ["admin", "ci", "deploy", "ops"]
    assert load_registry(token_file, None).clients == (admin,)
    assert not load_registry(None, None)


def test_authenticate_finds_the_client_of_a_bearer_token(clients_file: Path) -> None:
    registry = build_registry(None, load_clients_file(clients_file))
    for name, token in zip(("ci", "deploy", "ops"), TOKENS, strict=True):
        found = registry.authenticate(f"Bearer {token}".encode())
        assert found is not None and found.name == name
    assert registry.authenticate(f"bearer  {TOKENS[1]} ".encode()) == registry.clients[1]
    for refused in (None, b"", b"Bearer", b"Bearer ", f"Basic {TOKENS[0]}".encode()):
        assert registry.authenticate(refused) is None
    assert registry.authenticate(f"Bearer {TOKENS[0]}x".encode()) is None
    assert registry.authenticate(f"Bearer {sha256(TOKENS[0])}".encode()) is None
    assert Registry().authenticate(f"Bearer {TOKENS[0]}".encode()) is None


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKENS[0]}".encode(),
        f"Bearer {TOKENS[2]}".encode(),
        b"Bearer wrong",
        b"Basic abc",
        b"",
        None,
    ],
)
def test_authenticate_compares_the_digest_with_every_client(
    clients_file: Path, header: bytes | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = build_registry(None, load_clients_file(clients_file))
    compared: list[tuple[object, object]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    registry.authenticate(header)
    assert len(compared) == 3
    assert {b for _, b in compared} == {client.digest for client in registry.clients}
    assert all(isinstance(a, bytes) and len(a) == 32 for a, _ in compared)  # digests, not tokens


def test_no_token_or_digest_in_reprs_errors_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_urlsafe(32)
    caplog.set_level(logging.DEBUG)
    registry = build_registry(None, parse_clients(table("ci", token, "rotate:*").encode(), "f"))
    assert registry.authenticate(f"Bearer {token}x".encode()) is None
    shown = repr(registry) + repr(registry.clients) + str(registry.clients[0])
    assert sha256(token) not in shown and "ci" in shown
    # an operator who pastes the token where its hash belongs is not told the token back
    pasted = write_private(
        tmp_path / "c.toml", f'[[clients]]\nname = "ci"\ntoken_sha256 = "{token}"\nscopes = []\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_clients_file(pasted)
    assert token not in str(caught.value)
    assert "token_sha256" in str(caught.value)
    assert caplog.records == []


BAD_FILES = [
    ("[[clients]\n", "invalid TOML"),
    (b"\xff\xfe", "not UTF-8"),
    ("clients_extra = 1\n" + THREE, "unknown key 'clients_extra'"),
    ("clients = 3\n", "clients is not a list of tables"),
    (
        THREE.replace('name = "ci"', 'name = "ci"\ntoken = "x"'),
        "clients[0]: unknown key 'token'",
    ),
    (THREE.replace('name = "deploy"\n', ""), "clients[1]: name is missing"),
    (THREE.replace('"ops"', '"o ps"'), "clients[2].name is not a valid client name"),
    (THREE.replace(sha256(TOKENS[0]), sha256(TOKENS[0]).upper()), "not 64 lowercase hex"),
    (THREE.replace(sha256(TOKENS[0]), sha256(TOKENS[0])[:63]), "not 64 lowercase hex"),
    (table("ci", "", "rotate:*"), "hash of an empty token"),
    (THREE.replace('"revoke:*", ', ""), None),
    (THREE.replace('"revoke:*"', '"delete:*"'), "'delete:*' is not a scope (ACTION is not"),
    (THREE.replace('"revoke:*"', '"revoke"'), "'revoke' is not a scope (no ':'"),
    (THREE.replace('"revoke:*"', '"revoke:no/such"'), "(KEYSET is neither a keyset name nor *)"),
    (THREE.replace('"revoke:*"', '"Rotate:*"'), "'Rotate:*' is not a scope"),
    (THREE.replace('"revoke:*"', "7"), "a scope is not a string"),
    (THREE.replace('["revoke:*", "rotate:*"]', "[]"), "scopes is not a non-empty list"),
    (THREE.replace('"deploy"', '"ci"'), "two clients are named ci"),
    (THREE.replace(sha256(TOKENS[1]), sha256(TOKENS[0])), "clients ci and deploy have the same"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_a_bad_clients_file_is_one_line_naming_the_file(
    tmp_path: Path, content: str | bytes, message: str | None
) -> None:
    path = tmp_path / "clients.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    path.chmod(0o600)
    if message is None:  # the control: the same edit, still valid
        assert len(load_clients_file(path)) == 3
        return
    with pytest.raises(ConfigError) as caught:
        load_clients_file(path)
    error = caught.value
    assert error.exit_code == 2
    assert message in error.message
    assert error.message.startswith(f"server.admin_clients_file {path}")
    assert error.hint and "\n" not in str(error)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o660, 0o601])
def test_a_clients_file_others_may_use_or_its_group_write_is_refused(
    clients_file: Path, mode: int
) -> None:
    clients_file.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_registry(None, clients_file)
    assert caught.value.exit_code == 2
    assert f"{clients_file} is accessible to other users (mode {mode:03o})" in caught.value.message
    assert f"chmod 600 {clients_file}" in caught.value.hint
    assert "mode 0400" in caught.value.hint  # container secrets cannot be chmod-ed


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440])
def test_a_private_clients_file_is_accepted(clients_file: Path, mode: int) -> None:
    clients_file.chmod(mode)
    assert len(load_clients_file(clients_file)) == 3


def test_not_a_regular_file_or_missing_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for path, message in (
        (fifo, "is not a regular file"),  # and opening it does not hang
        (tmp_path, "is not a regular file"),
        (tmp_path / "absent.toml", "does not exist"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_registry(None, path)
    assert load_clients_file(tmp_path / "absent.toml", missing_ok=True) == ()


def test_an_empty_clients_file_has_no_clients(tmp_path: Path) -> None:
    path = write_private(tmp_path / "clients.toml", "# no clients yet\n")
    registry = load_registry(None, path)
    assert not registry and registry.authenticate(b"Bearer anything") is None


def test_a_client_named_admin_beside_an_admin_token_is_refused(tmp_path: Path) -> None:
    path = write_private(tmp_path / "clients.toml", table("admin", TOKENS[0], "rotate:*"))
    token_file = write_private(
        tmp_path / "admin.token", "the-admin-token-of-more-than-32-characters"
    )
    assert [c.name for c in load_registry(None, path).clients] == ["admin"]
    with pytest.raises(ConfigError) as caught:
        load_registry(token_file, path)
    assert caught.value.exit_code == 2
    assert f"server.admin_clients_file {path}: a client is named admin" in caught.value.message
    assert "server.admin_token_file" in str(caught.value)


def test_the_admin_token_shared_with_a_client_is_refused(tmp_path: Path) -> None:
    path = write_private(tmp_path / "clients.toml", table("ci", TOKENS[0], "rotate:*"))
    token_file = write_private(tmp_path / "admin.token", TOKENS[0] + "\n")
    with pytest.raises(ConfigError, match="clients admin and ci have the same token"):
        load_registry(token_file, path)


def test_a_bad_admin_token_file_is_refused_as_before(tmp_path: Path) -> None:
    token_file = write_private(tmp_path / "admin.token", "t", mode=0o644)
    with pytest.raises(ConfigError, match=r"server.admin_token_file .* \(mode 644\)"):
        load_registry(token_file, None)
    write_private(token_file, " \n")
    with pytest.raises(ConfigError, match="is empty"):
        load_registry(token_file, None)


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("signing-key:*", Scope("signing-key", "*")),
        ("revoke:a.b_c-9", Scope("revoke", "a.b_c-9")),
        ("sign:api", Scope("sign", "api")),
        ("status:*", Scope("status", "*")),
    ],
)
def test_scopes_parse_and_print_back(text: str, scope: Scope) -> None:
    assert Scope.parse(text) == scope and str(scope) == text


@pytest.mark.parametrize("text", ["signing:api", "sign-key:api", "stat:api", "sign", "sign:"])
def test_near_misses_of_the_actions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"ACTION|KEYSET|':'"):
        Scope.parse(text)


def test_clients_compare_by_value() -> None:
    one = Client("ci", hashlib.sha256(b"t").digest(), (Scope("rotate", "*"),))
    assert one == dataclasses.replace(one)
