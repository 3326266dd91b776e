"""The clients file: TOML ``[[clients]]`` tables read into :class:`Client` values, and written.

    [[clients]]
    name = "ci-deploy"
    token_sha256 = "<lowercase hex SHA-256 of the token's UTF-8 bytes>"
    scopes = ["rotate:default", "signing-key:*"]

Every defect is a one-line :class:`ConfigError` (exit 2) naming the file, the entry and the fix;
no value that could be a token is ever quoted in it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Final

from keyrotd.admin_clients.registry import (
    CLIENT_NAME,
    NAME_HINT,
    SCOPE_HINT,
    Client,
    Scope,
    ScopeError,
    refuse_shared_tokens,
)
from keyrotd.errors import ConfigError
from keyrotd.secretfiles import read_secret_file

SETTING: Final = "server.admin_clients_file"
FIELDS: Final = ("name", "token_sha256", "scopes")
HEADER: Final = (
    "# keyrotd admin clients (server.admin_clients_file): keep it mode 0600.\n"
    "# Managed by `keyrotd client add|list|remove`; only the SHA-256 of each token is kept.\n"
)
_HEX_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_EMPTY_TOKEN_SHA256: Final = hashlib.sha256(b"").hexdigest()
_HASH_HINT: Final = (
    "write the lowercase hex SHA-256 of the token, never the token itself "
    "(`printf %s TOKEN | sha256sum`), or let `keyrotd client add` write it"
)
_TABLE: Final = re.compile(r"^[ \t]*\[\[[ \t]*clients[ \t]*\]\][ \t]*(#.*)?$", re.MULTILINE)


def load_clients_file(path: Path, *, missing_ok: bool = False) -> tuple[Client, ...]:
    """The clients in ``path``, checked by the secret-file rule (``keyrotd.secretfiles``)."""
    if missing_ok and not path.exists():
        return ()
    return parse_clients(read_secret_file(path, SETTING), f"{SETTING} {path}")


def parse_clients(data: bytes, source: str) -> tuple[Client, ...]:
    """The clients in the TOML ``data``; errors name ``source``."""
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: not UTF-8 text (byte {exc.start})", "save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid TOML: {exc}", "fix the syntax (see docs/http.md)"
        ) from None
    unknown = [key for key in document if key != "clients"]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}", "the file holds only [[clients]] tables"
        )
    entries = document.get("clients", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{source}: clients is not a list of tables", "write [[clients]] tables")
    clients = tuple(
        _client(entry, f"{source}: clients[{index}]") for index, entry in enumerate(entries)
    )
    _refuse_duplicate_names(clients, source)
    refuse_shared_tokens(clients, source)
    return clients


def _client(entry: dict[str, object], where: str) -> Client:
    for key in entry:
        if key not in FIELDS:
            raise ConfigError(
                f"{where}: unknown key {key!r}", "the keys are name, token_sha256 and scopes"
            )
    for key in FIELDS:
        if key not in entry:
            raise ConfigError(f"{where}: {key} is missing", "give name, token_sha256 and scopes")
    name, digest, scopes = entry["name"], entry["token_sha256"], entry["scopes"]
    if not isinstance(name, str) or not CLIENT_NAME.fullmatch(name):
        raise ConfigError(f"{where}.name is not a valid client name", NAME_HINT)
    where = f"{where} ({name})"
    if not isinstance(digest, str) or not _HEX_SHA256.fullmatch(digest):
        raise ConfigError(f"{where}: token_sha256 is not 64 lowercase hex digits", _HASH_HINT)
    if digest == _EMPTY_TOKEN_SHA256:
        raise ConfigError(f"{where}: token_sha256 is the hash of an empty token", _HASH_HINT)
    if not isinstance(scopes, list) or not scopes:
        raise ConfigError(f"{where}: scopes is not a non-empty list", SCOPE_HINT)
    return Client(name, bytes.fromhex(digest), tuple(_scope(s, f"{where}: scopes") for s in scopes))


def _scope(text: object, where: str) -> Scope:
    if not isinstance(text, str):
        raise ConfigError(f"{where}: a scope is not a string", SCOPE_HINT)
    try:
        return Scope.parse(text)
    except ScopeError as exc:
        raise ConfigError(f"{where}: {text!r} is not a scope ({exc})", SCOPE_HINT) from None


def _refuse_duplicate_names(clients: Sequence[Client], source: str) -> None:
    names = [client.name for client in clients]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(
                f"{source}: two clients are named {name}", "give every client its own name"
            )


def render_client(client: Client) -> str:
    """One ``[[clients]]`` table (names and scopes are plain ASCII: JSON strings are TOML)."""
    scopes = ", ".join(json.dumps(str(scope)) for scope in client.scopes)
    return (
        f"[[clients]]\nname = {json.dumps(client.name)}\n"
        f'token_sha256 = "{client.token_sha256}"\nscopes = [{scopes}]\n'
    )


def with_client(text: str, clients: Sequence[Client], client: Client) -> str:
    """``text`` (holding ``clients``) with ``client`` appended, every line kept as written.

    A new file starts with :data:`HEADER`. When a ``[[clients]]`` table cannot simply follow
    (the clients written as an inline array, say), the file is written anew, comments lost.
    """
    separator = "\n" if text.endswith("\n") else "\n\n"
    appended = f"{text or HEADER}{separator}{render_client(client)}"
    return _checked(appended, (*clients, client))


def without_client(text: str, clients: Sequence[Client], name: str) -> str:
    """``text`` without the table of client ``name``, keeping every other line as written.

    When the tables cannot be told apart by their ``[[clients]]`` lines (a multi-line string
    holding one, say), the file is written anew from ``clients``, comments lost.
    """
    bounds = [*_table_starts(text), len(text)]
    pieces = [text[: bounds[0]]] + [text[a:b] for a, b in pairwise(bounds)]
    kept = [pieces[0]] + [p for p in pieces[1:] if _table_name(p) != name]
    remaining = tuple(client for client in clients if client.name != name)
    return _checked("".join(kept) if len(kept) == len(pieces) - 1 else "", remaining)


def _table_starts(text: str) -> list[int]:
    """Where each table begins: its ``[[clients]]`` line and the comment lines just above it."""
    starts = []
    for match in _TABLE.finditer(text):
        start = match.start()
        while start > 0:
            above = text.rfind("\n", 0, start - 1) + 1
            if not text[above:start].lstrip().startswith("#"):
                break
            start = above
        starts.append(start)
    return starts


def _table_name(piece: str) -> object:
    try:
        entries = tomllib.loads(piece).get("clients", [{}])
    except tomllib.TOMLDecodeError:
        return None
    return entries[0].get("name") if len(entries) == 1 else None


def _checked(edited: str, clients: tuple[Client, ...]) -> str:
    """``edited`` if it reads back as ``clients``, else the file written anew from them."""
    try:
        if parse_clients(edited.encode(), "") == clients:
            return edited
    except ConfigError:
        pass
    return HEADER + "".join(f"\n{render_client(client)}" for client in clients)
