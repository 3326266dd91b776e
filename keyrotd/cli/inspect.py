"""``keyrotd inspect``'s I/O: the token from the argument or stdin, the keys from storage or a URL.

:func:`run_inspect` reads the token, the keys (the keyset from storage, live keys and history;
or a JWKS over HTTP), has :func:`keyrotd.inspection.inspect_token` judge it at the clock's time
and prints the verdict. Exit 0 for a valid token, 1 with the cause otherwise, 3
(:class:`KeysUnavailableError`) when the keys to judge by cannot be read: the URL is unreachable,
answers non-2xx or serves no JWKS; the keyset's document is missing, unreadable or corrupt.
Configuration and usage errors stay exit 2. It never prints key material.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from keyrotd.errors import KeyrotdError, UsageError
from keyrotd.inspection import DEFAULT_SKEW, MAX_TOKEN, KeySource, inspect_token, render
from keyrotd.keysets import KeysetManager, KeysetSpec
from keyrotd.lifecycle import view

if TYPE_CHECKING:
    from datetime import datetime

    from keyrotd.config import Settings
    from keyrotd.model import Keyset
    from keyrotd.times import Clock

JWKS_TIMEOUT = 10.0


class KeysUnavailableError(KeyrotdError):
    """``inspect`` could not read the keys to judge the token by (exit 3)."""

    exit_code = 3

    @classmethod
    def of(cls, error: KeyrotdError) -> KeysUnavailableError:
        return cls(error.message, error.hint)


def run_inspect(settings: Settings, args: argparse.Namespace, clock: Clock) -> int:
    token = read_token(args.token)
    now = clock()
    if args.jwks_url:
        keys = jwks_source(args.jwks_url)
    else:
        keys = keyset_source(settings, args.keyset, now)
    verdict = inspect_token(token, keys, now, args.audience, args.issuer)
    if args.json:
        sys.stdout.write(json.dumps(verdict.as_json(), indent=2) + "\n")
    else:
        sys.stdout.write(render(verdict))
    return 0 if verdict.valid else 1


def read_token(argument: str) -> str:
    """The argument, or stdin for ``-`` (bytes that are not UTF-8 make an incorrect format)."""
    if argument != "-":
        return argument
    stream = getattr(sys.stdin, "buffer", None)
    try:
        data = stream.read(MAX_TOKEN + 1) if stream is not None else sys.stdin.read(MAX_TOKEN + 1)
    except (OSError, ValueError) as exc:  # closed, or not readable
        raise KeyrotdError(
            f"cannot read the token from stdin ({exc})", "pass the token as the argument"
        ) from None
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def keyset_source(settings: Settings, name: str | None, now: datetime) -> KeySource:
    """The keyset's live keys and history as readers see them at ``now``, and which other
    keyset of the configuration issued each of their kids (for an unknown kid)."""
    from keyrotd.storage import open_storage

    chosen = settings.keyset(name)
    storage = open_storage(settings.storage)
    try:
        keyset = _stored_keyset(KeysetManager(storage, KeysetSpec.from_settings(chosen)), now)
        elsewhere: dict[str, str] = {}
        for other in settings.keysets:
            if other.name == chosen.name:
                continue
            try:
                theirs = KeysetManager(storage, KeysetSpec.from_settings(other)).view(now)
            except KeyrotdError:
                continue  # only a hint: a broken neighbour does not stop the inspection
            for key in (*theirs.keys, *theirs.history):
                elsewhere.setdefault(key.kid, other.name)
    finally:
        storage.close()
    return KeySource.of_keyset(keyset, chosen.policy, elsewhere)


def _stored_keyset(manager: KeysetManager, now: datetime) -> Keyset:
    """The keyset as readers see it at ``now``; a document that is missing, unreadable or
    corrupt is a :class:`KeysUnavailableError`."""
    try:
        loaded = manager.load()
    except KeyrotdError as exc:
        raise KeysUnavailableError.of(exc) from None
    if loaded.version is None:
        raise KeysUnavailableError(
            f"keyset {manager.name} has no document at {loaded.location}",
            "check that storage is configured as for the daemon that issues the tokens "
            "(--config, storage.path or storage.secret_prefix and region)",
        )
    return view(loaded.keyset, manager.spec.policy, now)


def jwks_source(url: str) -> KeySource:
    """The keys of a JWKS fetched over HTTP(S); the leeway is :data:`DEFAULT_SKEW`."""
    from keyrotd.fetching import get_json

    try:
        document = get_json(url, timeout=JWKS_TIMEOUT, what="JWKS")
    except UsageError:
        raise  # not an http(s) URL: the command line is wrong (exit 2)
    except KeyrotdError as exc:
        raise KeysUnavailableError.of(exc) from None
    try:
        return KeySource.of_jwks(document, url, DEFAULT_SKEW)
    except ValueError as exc:
        raise KeysUnavailableError(
            f"{url}: {exc}", "give the URL of a JWKS, e.g. …/jwks.json"
        ) from None
