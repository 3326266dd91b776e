"""Scopes, clients and the registry that authenticates a bearer token among them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from keyrotd.errors import ConfigError
from keyrotd.model import KEYSET_NAME

Action = Literal["signing-key", "sign", "status", "rotate", "revoke"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
ANY_KEYSET: Final = "*"
ADMIN: Final = "admin"
"""The name of the client that ``server.admin_token_file`` stands for."""

CLIENT_NAME: Final = KEYSET_NAME
"""Client names follow the keyset name rule: 1 to 64 letters, digits, '.', '_' or '-'."""
NAME_HINT: Final = "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
SCOPE_HINT: Final = (
    "write ACTION:KEYSET with ACTION signing-key, sign, status, rotate or revoke and KEYSET a "
    "keyset name or *, "
    "e.g. rotate:default"
)


class ScopeError(ValueError):
    """Text that is not ``ACTION:KEYSET``; ``str()`` says why (the caller quotes the text)."""


@dataclass(frozen=True)
class Scope:
    """``ACTION:KEYSET``: may do ``action`` on ``keyset`` (``*``: on every keyset)."""

    action: Action
    keyset: str

    @classmethod
    def parse(cls, text: str) -> Scope:
        action, colon, keyset = text.partition(":")
        if not colon:
            raise ScopeError("no ':' between ACTION and KEYSET")
        for known in ACTIONS:
            if action == known:
                if keyset != ANY_KEYSET and not KEYSET_NAME.fullmatch(keyset):
                    raise ScopeError("KEYSET is neither a keyset name nor *")
                return cls(known, keyset)
        raise ScopeError("ACTION is not signing-key, sign, status, rotate or revoke")

    def __str__(self) -> str:
        return f"{self.action}:{self.keyset}"

    def covers(self, action: str, keyset: str) -> bool:
        return self.action == action and self.keyset in (ANY_KEYSET, keyset)


EVERY_SCOPE: Final = tuple(Scope(action, ANY_KEYSET) for action in ACTIONS)


@dataclass(frozen=True)
class Client:
    """A named holder of one token, known by the SHA-256 ``digest`` of it, and its scopes."""

    name: str
    digest: bytes
    scopes: tuple[Scope, ...]

    def __repr__(self) -> str:  # never the digest: it identifies the token
        return f"Client(name={self.name!r}, scopes={self.scope_text!r})"

    @property
    def token_sha256(self) -> str:
        return self.digest.hex()

    @property
    def scope_text(self) -> str:
        """The scopes as ``client list`` prints them: ``rotate:default,signing-key:*``."""
        return ",".join(str(scope) for scope in self.scopes)

    def allows(self, action: str, keyset: str) -> bool:
        """Whether one of the scopes lets this client do ``action`` on ``keyset``."""
        return any(scope.covers(action, keyset) for scope in self.scopes)


def token_digest(token: bytes) -> bytes:
    """The SHA-256 of a token's bytes as sent (``token_sha256`` is its lowercase hex)."""
    return hashlib.sha256(token).digest()


def bearer_token(header: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer TOKEN`` value; None for any other value."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


@dataclass(frozen=True)
class Registry:
    """Every client that may call the admin endpoints (empty: none may)."""

    clients: tuple[Client, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.clients)

    def __repr__(self) -> str:
        return f"Registry({', '.join(client.name for client in self.clients)})"

    def authenticate(self, authorization_header_value: bytes | None) -> Client | None:
        """The client whose token the header carries, or None (the daemon answers 401).

        The presented token's digest is compared with every client's by
        :func:`hmac.compare_digest`, all of them, whatever matches or whether the header is a
        bearer token at all: the time taken says nothing about the token.
        """
        token = bearer_token(authorization_header_value)
        presented = token_digest(b"" if token is None else token)
        found: Client | None = None
        for client in self.clients:
            if hmac.compare_digest(presented, client.digest):
                found = client
        return None if token is None else found


def build_registry(
    admin_token: bytes | None, clients: Sequence[Client], source: str = "server.admin_clients_file"
) -> Registry:
    """One registry: ``admin`` (every scope) for the admin token if any, then ``clients``.

    A client named ``admin`` beside an admin token, or two clients with one token, is a
    :class:`ConfigError` naming ``source`` (exit 2).
    """
    everyone = list(clients)
    if admin_token is not None:
        if any(client.name == ADMIN for client in clients):
            raise ConfigError(
                f"{source}: a client is named {ADMIN} while server.admin_token_file is set "
                f"(that token is the client {ADMIN}, with every scope)",
                "rename the client, or unset server.admin_token_file",
            )
        everyone.insert(0, Client(ADMIN, token_digest(admin_token), EVERY_SCOPE))
    refuse_shared_tokens(everyone, source)
    return Registry(tuple(everyone))


def refuse_shared_tokens(clients: Iterable[Client], source: str) -> None:
    seen: dict[bytes, str] = {}
    for client in clients:
        if client.digest in seen:  # configuration time, not a request: no secret is timed here
            raise ConfigError(
                f"{source}: clients {seen[client.digest]} and {client.name} have the same token",
                "give every client its own token (`keyrotd client add` makes one)",
            )
        seen[client.digest] = client.name
