"""Scoped admin clients: who may call the authenticated endpoints, and for what
(docs/http.md).

The API for the daemon (401/403, SIGHUP re-read, audit log) and for ``check-config``::

    registry = load_registry(settings.server.admin_token_file, settings.server.admin_clients_file)
    client = registry.authenticate(authorization_header_value)   # bytes | None -> Client | None
    if client is None:                          -> 401 (audit: client "unknown")
    elif not client.allows(action, keyset):     -> 403 (audit: client.name)
    else:                                       -> run it (audit: client.name)

- :func:`load_registry` reads both files (each must pass the secret-file rule, README.md
  "Configuration": a regular file, nothing for others, no group write) and raises a one-line
  :class:`ConfigError` (exit 2) naming the file and the fix for any defect: bad TOML, unknown
  keys, a bad hash or scope, two clients with one name or one token, a client named ``admin``
  beside ``admin_token_file``, or a missing file. On SIGHUP call it again and keep the old
  registry if it raises. It is cheap: no network, no heavy import (no boto3, httptools,
  APScheduler).
- ``admin_token_file`` is the client ``admin`` with every scope (each action on ``*``).
- ``action`` is one of :data:`ACTIONS`: ``"signing-key"``, ``"sign"``, ``"status"``, ``"rotate"``,
  ``"revoke"`` (the last path segment of the endpoint); ``keyset`` is the keyset name from the
  path. An empty registry (``not registry``) authenticates nobody.
- :meth:`Registry.authenticate` takes the raw ``Authorization`` value (``Bearer TOKEN``, scheme
  case-insensitive), hashes the token (SHA-256 of its bytes as sent) and compares the digest with
  every client's by :func:`hmac.compare_digest`, all of them, with no early exit and no lookup on
  the secret. ``Client`` values are frozen; their ``repr`` shows no digest; ``client.name`` is
  safe for logs and metric labels (1 to 64 of ``A-Za-z0-9._-``).
"""

from __future__ import annotations

from pathlib import Path

from keyrotd.admin_clients.document import SETTING, load_clients_file, parse_clients
from keyrotd.admin_clients.registry import (
    ACTIONS,
    ADMIN,
    ANY_KEYSET,
    Action,
    Client,
    Registry,
    Scope,
    build_registry,
)
from keyrotd.secretfiles import load_admin_token

__all__ = [
    "ACTIONS",
    "ADMIN",
    "ANY_KEYSET",
    "SETTING",
    "Action",
    "Client",
    "Registry",
    "Scope",
    "build_registry",
    "load_clients_file",
    "load_registry",
    "parse_clients",
]


def load_registry(admin_token_file: Path | None, admin_clients_file: Path | None) -> Registry:
    """Every client of the two settings, checked together (see the module docstring)."""
    token = None if admin_token_file is None else load_admin_token(admin_token_file)
    clients = () if admin_clients_file is None else load_clients_file(admin_clients_file)
    source = SETTING if admin_clients_file is None else f"{SETTING} {admin_clients_file}"
    return build_registry(token, clients, source)
