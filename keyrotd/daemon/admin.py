"""The authenticated endpoints: the bearer token and the signing-key, rotate and revoke actions.

The token is read from ``server.admin_token_file`` at start and on every reload (surrounding
whitespace stripped). A missing, unreadable or empty file, or one that others may read or anyone
but its owner (and group, for reading) may write, refuses the start with a :class:`ConfigError`.
Tokens are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from keyrotd.daemon.state import rfc3339
from keyrotd.errors import ConfigError
from keyrotd.lifecycle import Command
from keyrotd.manager import Outcome

_UNSAFE_MODE: Final = stat.S_IWGRP | stat.S_IRWXO
_FIX: Final = "chmod 600 (or 640) the file, owned by the user running keyrotd"

Run = Callable[[str, Command], Outcome]
"""Apply an admin command to a keyset (blocking: run it in a worker thread)."""


def load_admin_token(path: Path) -> bytes:
    """The admin token in ``path``, or a :class:`ConfigError` saying what is wrong with the file."""
    where = f"server.admin_token_file {path}"
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist", "create it with a random token") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where} cannot be read ({reason})", _FIX) from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{where} is not a regular file", "give the path of the token file")
    if mode & _UNSAFE_MODE:
        raise ConfigError(
            f"{where} is accessible to other users (mode {stat.S_IMODE(mode):03o})", _FIX
        )
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

    def authorized(self, header: bytes | None) -> bool:
        if header is None:
            return False
        scheme, _, given = header.partition(b" ")
        # compare_digest even on a wrong scheme, so that timing says nothing about the token
        same = hmac.compare_digest(given.strip(), self.token)
        return same and scheme.lower() == b"bearer"


def outcome_json(name: str, outcome: Outcome) -> dict[str, object]:
    """The body of a rotate or revoke response: what changed, and the next activation."""
    pending = sorted(
        (k for k in outcome.keyset.pending if k.activates_at is not None),
        key=lambda k: (k.activates_at, k.created_at),
    )
    active = outcome.keyset.active
    return {
        "keyset": name,
        "transitions": [
            {
                "event": t.event,
                "kid": t.kid,
                "at": rfc3339(t.at),
                "exception": t.exception,
            }
            for t in outcome.transitions
        ],
        "active": active.kid if active else None,
        "next": {"kid": pending[0].kid, "activates_at": rfc3339(pending[0].activates_at)}
        if pending and pending[0].activates_at
        else None,
    }
