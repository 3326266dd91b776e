"""``keyrotd client add|list|remove``: the scoped admin clients of ``server.admin_clients_file``.

Exit codes: 1 for an unknown (``remove``) or duplicate (``add``) NAME, 2 for a bad NAME or scope,
a bad clients file, or no ``server.admin_clients_file``. ``add`` prints the new token once, alone
on the last line of stdout; the file keeps only its SHA-256. Running daemons pick a change up on
SIGHUP. ``keyrotd --help`` builds the parser here, so the rest (pydantic, the configuration, the
clients file) is imported by the command that runs: no storage, no daemon.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from keyrotd.errors import ConfigError, KeyrotdError, UsageError

if TYPE_CHECKING:
    from keyrotd.admin_clients.registry import Scope
    from keyrotd.config import Settings

TOKEN_BYTES: Final = 32
"""``secrets.token_urlsafe(32)``: 256 random bits, 43 URL-safe characters."""

Common = Callable[..., None]


def add_client_parser(parser: argparse.ArgumentParser, common: Common) -> None:
    """The ``client`` command's own commands, each taking ``--config`` and ``--debug`` too."""
    sub = parser.add_subparsers(dest="client_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        common(p, top=False)
        return p

    p = action("add", "add a client and print its new token (once)")
    p.add_argument("name", metavar="NAME", help="the client's name, as logs and metrics show it")
    p.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        metavar="S",
        help="ACTION:KEYSET, ACTION signing-key, sign, status, rotate or revoke, KEYSET a name "
        "or *; repeatable",
    )
    action("list", "print each client as NAME SCOPE,SCOPE (never a hash)")
    p = action("remove", "remove a client: its token stops working on the daemons' next SIGHUP")
    p.add_argument("name", metavar="NAME", help="the client to remove")


def dispatch(args: argparse.Namespace) -> int:
    from keyrotd.admin_clients.document import SETTING
    from keyrotd.config import load_settings

    settings = load_settings(args.config)
    path = settings.server.admin_clients_file
    if path is None:
        raise ConfigError(
            f"{SETTING} is not set",
            'set it, e.g. admin_clients_file = "/etc/keyrotd/clients.toml" under [server] '
            "(or KEYROTD_SERVER__ADMIN_CLIENTS_FILE)",
        )
    handler = {"add": cmd_add, "list": cmd_list, "remove": cmd_remove}[args.client_command]
    return handler(settings, path, args)


def cmd_add(settings: Settings, path: Path, args: argparse.Namespace) -> int:
    from keyrotd.admin_clients.document import SETTING, parse_clients, with_client
    from keyrotd.admin_clients.registry import ADMIN, CLIENT_NAME, NAME_HINT, Client, token_digest
    from keyrotd.admin_clients.writing import rewrite

    name: str = args.name
    if not CLIENT_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid client name", NAME_HINT)
    scopes = tuple(dict.fromkeys(_scope(text) for text in args.scopes))
    _note_unknown_keysets(settings, scopes)
    import secrets  # hashlib and OpenSSL: not for --help, which builds this parser

    token = secrets.token_urlsafe(TOKEN_BYTES)
    client = Client(name, token_digest(token.encode()), scopes)
    taken = {ADMIN} if settings.server.admin_token_file is not None else set()
    source = f"{SETTING} {path}"

    def append(current: bytes | None) -> bytes:
        existing = () if current is None else parse_clients(current, source)
        if name in taken:
            raise KeyrotdError(
                f"client {ADMIN} is the admin token (server.admin_token_file)",
                "pick another name",
            )
        if any(other.name == name for other in existing):
            raise KeyrotdError(
                f"client {name} already exists in {path}",
                f"pick another name, or run `keyrotd client remove {name}` first",
            )
        text = "" if current is None else current.decode()
        updated = with_client(text, existing, client).encode()
        parse_clients(updated, source)  # what is written reads back
        return updated

    rewrite(path, SETTING, append)
    print(f"client {name} added to {path} with scopes {client.scope_text}")
    print("send SIGHUP to running daemons to accept it; its token, shown only this once:")
    print(token)
    return 0


def cmd_list(settings: Settings, path: Path, args: argparse.Namespace) -> int:
    from keyrotd.admin_clients.document import load_clients_file

    clients = load_clients_file(path, missing_ok=True)
    if not clients and not path.exists():
        print(f"keyrotd: no clients yet: {path} does not exist", file=sys.stderr)
    for client in clients:
        print(f"{client.name} {client.scope_text}")
    return 0


def cmd_remove(settings: Settings, path: Path, args: argparse.Namespace) -> int:
    from keyrotd.admin_clients.document import SETTING, parse_clients, without_client
    from keyrotd.admin_clients.writing import rewrite

    name: str = args.name
    source = f"{SETTING} {path}"

    def drop(current: bytes | None) -> bytes:
        existing = () if current is None else parse_clients(current, source)
        if all(client.name != name for client in existing):
            raise KeyrotdError(f"no client {name} in {path}", "see `keyrotd client list`")
        assert current is not None
        return without_client(current.decode(), existing, name).encode()

    rewrite(path, SETTING, drop)
    print(f"client {name} removed from {path}; send SIGHUP to running daemons to refuse its token")
    return 0


def _scope(text: str) -> Scope:
    from keyrotd.admin_clients.registry import SCOPE_HINT, Scope, ScopeError

    try:
        return Scope.parse(text)
    except ScopeError as exc:
        raise UsageError(f"--scope {text!r} is not a scope ({exc})", SCOPE_HINT) from None


def _note_unknown_keysets(settings: Settings, scopes: tuple[Scope, ...]) -> None:
    from keyrotd.admin_clients.registry import ANY_KEYSET

    known = {keyset.name for keyset in settings.keysets} | {ANY_KEYSET}
    for keyset in dict.fromkeys(scope.keyset for scope in scopes if scope.keyset not in known):
        print(
            f"keyrotd: note: keyset {keyset} is not in the configuration; the scope takes "
            "effect if it is added",
            file=sys.stderr,
        )
