"""Which key ``keyrotd revoke KID`` names: a whole kid or a prefix of at least
:data:`MIN_PREFIX` characters (``status`` shows eight), looked up in the keysets given (pure).

A kid matches wherever the keyset still knows it, in the JWKS or in its history (revoking a kid
already revoked or expired is then a no-op, not an error). An exact kid wins over a prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from keyrotd.errors import KeyNotFoundError, KeyrotdError, UsageError
from keyrotd.model import Keyset

MIN_PREFIX: Final = 8
"""The shortest prefix taken for a kid: what ``keyrotd status`` shows of each."""


def resolve_kid(given: str, keysets: Mapping[str, Keyset]) -> tuple[str, str]:
    """The keyset and the whole kid that ``given`` names among ``keysets`` (by name, in the
    order searched). Raises :class:`UsageError` for a prefix shorter than :data:`MIN_PREFIX`,
    :class:`KeyNotFoundError` when nothing matches, :class:`KeyrotdError` when more than one
    keyset or kid does."""
    known = {name: {k.kid for k in (*ks.keys, *ks.history)} for name, ks in keysets.items()}
    exact = [(name, given) for name, kids in known.items() if given in kids]
    if not exact and len(given) < MIN_PREFIX:
        raise UsageError(
            f"{given} is not a kid, and a prefix must have at least {MIN_PREFIX} characters",
            "give the whole kid or its first 8 characters, as `keyrotd status` shows them",
        )
    found = exact or [
        (name, kid) for name, kids in known.items() for kid in sorted(kids) if kid.startswith(given)
    ]
    if not found:
        where = (
            f"keyset {next(iter(keysets))} has no key"
            if len(keysets) == 1
            else "no keyset has a key"
        )
        searched = "" if len(keysets) <= 1 else f" (searched {', '.join(keysets)})"
        raise KeyNotFoundError(
            f"{where} with kid {given}{searched}", "list the kids with `keyrotd status`"
        )
    kids = sorted({kid for _, kid in found})
    if len(kids) > 1:
        matches = ", ".join(f"{kid} (keyset {name})" for name, kid in found)
        raise KeyrotdError(f"{given} matches more than one kid: {matches}", "give more of the kid")
    if len(found) > 1:
        holders = ", ".join(name for name, _ in found)
        raise KeyrotdError(
            f"kid {kids[0]} is in more than one keyset ({holders})", "choose one with --keyset"
        )
    return found[0]
