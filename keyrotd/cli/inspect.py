"""``keyrotd inspect``'s I/O: the token from the argument or stdin, the keys from storage or a URL.

:func:`run_inspect` reads the token (the argument, the file it names, or stdin), the keys (the
keyset from storage, live keys and history; or a JWKS over HTTP), has
:func:`keyrotd.inspection.inspect_token` judge it at the clock's time (``--clock-skew``, else the
keyset's ``clock_skew``, else 5m for a JWKS) and prints the verdict. Exit 0 for a valid token, 1
with the cause otherwise, 3 (:class:`KeysUnavailableError`) when the keys to judge by cannot be
read: the URL is unreachable, answers non-2xx or serves no JWKS; the keyset's document is
missing, unreadable or corrupt. Configuration and usage errors stay exit 2. It never prints key
material.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from keyrotd.durations import InvalidValueError, parse_duration
from keyrotd.errors import KeyrotdError, UsageError
from keyrotd.inspection import DEFAULT_SKEW, MAX_TOKEN, KeySource, inspect_token, render
from keyrotd.lifecycle.planner import view
from keyrotd.writer import KeysetSpec, KeysetWriter

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
    skew = clock_skew(args.clock_skew)
    token = read_token(args.token)
    now = clock()
    if args.jwks_url:
        keys = jwks_source(args.jwks_url, DEFAULT_SKEW if skew is None else skew)
    else:
        keys = keyset_source(settings, args.keyset, now)
        keys = keys if skew is None else dataclasses.replace(keys, clock_skew=skew)
    verdict = inspect_token(token, keys, now, args.audience, args.issuer)
    if args.json:
        sys.stdout.write(json.dumps(verdict.as_json(), indent=2) + "\n")
    else:
        sys.stdout.write(render(verdict))
    return 0 if verdict.valid else 1


def clock_skew(value: str | None) -> timedelta | None:
    """``--clock-skew``: the leeway for exp, nbf and iat; ``None``: the keyset's (or 5m)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except InvalidValueError as exc:
        raise UsageError(f"--clock-skew: {exc.problem}", exc.hint) from None


def read_token(argument: str) -> str:
    """The argument, the file it names, or stdin for ``-`` (bytes that are not UTF-8 make an
    incorrect format)."""
    if argument != "-":
        return _token_file(argument) if os.path.isfile(argument) else argument
    stream = getattr(sys.stdin, "buffer", None)
    try:
        data = stream.read(MAX_TOKEN + 1) if stream is not None else sys.stdin.read(MAX_TOKEN + 1)
    except (OSError, ValueError) as exc:  # closed, or not readable
        raise KeyrotdError(
            f"cannot read the token from stdin ({exc})", "pass the token as the argument"
        ) from None
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def _token_file(name: str) -> str:
    """The token held in the file ``name`` (a token is never a file's name)."""
    try:
        with open(name, "rb") as file:
            data = file.read(MAX_TOKEN + 1)
    except OSError as exc:
        raise UsageError(
            f"cannot read the token from {name} ({exc.strerror or type(exc).__name__})",
            "check the file's permissions, or pass the token itself",
        ) from None
    return data.decode("utf-8", errors="replace")


def keyset_source(settings: Settings, name: str | None, now: datetime) -> KeySource:
    """The keyset's live keys and history as readers see them at ``now``, and which other
    keyset of the configuration issued each of their kids (for an unknown kid)."""
    from keyrotd.storage import open_storage

    chosen = settings.keyset(name)
    storage = open_storage(settings.storage)
    try:
        keyset = _stored_keyset(KeysetWriter(storage, KeysetSpec.from_settings(chosen)), now)
        elsewhere: dict[str, str] = {}
        for other in settings.keysets:
            if other.name == chosen.name:
                continue
            try:
                theirs = KeysetWriter(storage, KeysetSpec.from_settings(other)).view(now)
            except KeyrotdError:
                continue  # only a hint: a broken neighbour does not stop the inspection
            for key in (*theirs.keys, *theirs.history):
                elsewhere.setdefault(key.kid, other.name)
    finally:
        storage.close()
    return KeySource.of_keyset(keyset, chosen.policy, elsewhere)


def _stored_keyset(manager: KeysetWriter, now: datetime) -> Keyset:
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


def jwks_source(url: str, skew: timedelta = DEFAULT_SKEW) -> KeySource:
    """The keys of a JWKS fetched over HTTP(S), judged with ``skew`` of leeway."""
    from keyrotd.fetching import get_json

    try:
        document = get_json(url, timeout=JWKS_TIMEOUT, what="JWKS")
    except UsageError:
        raise  # not an http(s) URL: the command line is wrong (exit 2)
    except KeyrotdError as exc:
        raise KeysUnavailableError.of(exc) from None
    try:
        return KeySource.of_jwks(document, url, skew)
    except ValueError as exc:
        raise KeysUnavailableError(
            f"{url}: {exc}", "give the URL of a JWKS, e.g. …/jwks.json"
        ) from None
