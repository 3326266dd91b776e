"""The authenticated endpoints: the bearer token and the signing-key, rotate and revoke actions.

    GET  /keysets/{name}/signing-key       {"active": private JWK, "next": ..., "next_activates_at"}
    POST /keysets/{name}/rotate[?now=true]
    POST /keysets/{name}/keys/{kid}/revoke

They exist only when ``server.admin_token_file`` is set. The token is read from that file at start
and on every reload (surrounding whitespace stripped); a missing, unreadable or empty file, or one
that others may read or anyone but its owner (and group, for reading) may write, refuses the start
with a :class:`ConfigError`. Tokens are compared with :func:`hmac.compare_digest`. Rotate and
revoke write storage: they run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import stat
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs

from keyrotd.daemon.responses import (
    GET,
    JSON,
    MAX_BODY,
    NO_STORE,
    POST,
    Response,
    Scope,
    error,
    header,
    not_allowed,
    respond,
    too_large,
    unauthorized,
)
from keyrotd.daemon.state import Board, rfc3339
from keyrotd.errors import ConfigError, KeyNotFoundError, KeyrotdError
from keyrotd.lifecycle import Command, Revoke, Rotate
from keyrotd.manager import Outcome

_UNSAFE_MODE: Final = stat.S_IWGRP | stat.S_IRWXO
_FIX: Final = (
    "chmod 600 (or 640) the file, owned by the user running keyrotd; a container secret: mount it "
    "with mode=0400,uid=<the user id keyrotd runs as> (10001 in the image)"
)

Run = Callable[[str, Command], Outcome]
"""Apply an admin command to a keyset (blocking: run it in a worker thread)."""


def load_admin_token(path: Path) -> bytes:
    """The admin token in ``path``, or a :class:`ConfigError` saying what is wrong with the file."""
    where = f"server.admin_token_file {path}"
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where} is not a regular file", "give the path of the token file")
        if mode & _UNSAFE_MODE:
            raise ConfigError(
                f"{where} is accessible to other users (mode {stat.S_IMODE(mode):03o})", _FIX
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist", "create it with a random token") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where} cannot be read ({reason})", _FIX) from None
    token = data.strip()
    if not token:
        raise ConfigError(
            f"{where} is empty", "write a random token into it, e.g. `openssl rand -hex 32`"
        )
    return token


@dataclass(frozen=True)
class Admin:
    """The admin token and what the admin endpoints run."""

    token: bytes
    run: Run

    def authorized(self, value: bytes | None) -> bool:
        if value is None:
            return False
        scheme, _, given = value.partition(b" ")
        # compare_digest even on a wrong scheme, so that timing says nothing about the token
        same = hmac.compare_digest(given.strip(), self.token)
        return same and scheme.lower() == b"bearer"


def route(
    admin: Admin, board: Board, executor: Executor, parts: list[str], scope: Scope
) -> Response | Awaitable[Response] | None:
    """Answer ``/keysets/{name}/...`` admin paths (split after ``keysets``); None: not one."""
    action = "/".join(["", *parts[1:]]) if len(parts) in (2, 4) else ""
    if action == "/signing-key":
        allowed: tuple[str, ...] = GET
    elif action == "/rotate" or (len(parts) == 4 and parts[1] == "keys" and parts[3] == "revoke"):
        allowed = POST
    else:
        return None
    headers = scope["headers"]
    if scope["method"] not in allowed:
        return not_allowed(allowed)
    if not admin.authorized(header(headers, b"authorization")):
        return unauthorized()
    if too_large(headers):
        return error(413, f"request bodies are ignored; send at most {MAX_BODY} bytes")
    name = parts[0]
    if name not in board.snapshot.order:
        return error(404, f"unknown keyset {name}")
    if parts[1] == "signing-key":
        return signing_key(board, name)
    if len(parts) == 4:
        return command(admin, executor, name, Revoke(parts[2]))
    query = parse_qs(scope["query_string"].decode("latin-1"))
    now = query.get("now", ["false"])[-1].lower()
    if now not in ("true", "false", "1", "0"):
        return error(400, "now must be true or false")
    return command(admin, executor, name, Rotate(now=now in ("true", "1")))


def signing_key(board: Board, name: str) -> Response:
    published = board.current(name, time.time())
    if published is None:
        return error(503, f"keyset {name} is not loaded yet", (b"retry-after", b"1"))
    try:
        body = published.signing_key()
    except LookupError as exc:
        return error(503, str(exc))
    return Response(200, [JSON, NO_STORE], body)


async def command(admin: Admin, executor: Executor, name: str, action: Command) -> Response:
    loop = asyncio.get_running_loop()
    try:
        outcome = await loop.run_in_executor(executor, admin.run, name, action)
    except KeyNotFoundError as exc:
        return error(404, exc.message)
    except KeyrotdError as exc:
        return error(503, str(exc))
    return respond(200, outcome_json(name, outcome))


def outcome_json(name: str, outcome: Outcome) -> dict[str, object]:
    """The body of a rotate or revoke response: what changed, and the next activation."""
    pending = sorted(
        (k for k in outcome.keyset.pending if k.activates_at is not None),
        key=lambda k: (k.activates_at, k.created_at),
    )
    active = outcome.keyset.active
    upcoming = pending[0] if pending else None
    return {
        "keyset": name,
        "transitions": [
            {"event": t.event, "kid": t.kid, "at": rfc3339(t.at), "exception": t.exception}
            for t in outcome.transitions
        ],
        "active": active.kid if active else None,
        "next": {"kid": upcoming.kid, "activates_at": rfc3339(upcoming.activates_at)}
        if upcoming is not None and upcoming.activates_at is not None
        else None,
    }
