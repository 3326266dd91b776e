"""``keyrotd import FILE [--keyset N] [--as active|retired] [--until T]``: adopt a key made
elsewhere (docs/cli.md), planned and written by the one writer (``lifecycle.Import``)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from keyrotd.cli.output import print_transitions
from keyrotd.config import Settings
from keyrotd.durations import parse_duration
from keyrotd.errors import KeyrotdError, UsageError
from keyrotd.importing import read_key_file
from keyrotd.lifecycle.commands import Import
from keyrotd.model import utc
from keyrotd.storage import Storage
from keyrotd.times import Clock, rfc3339
from keyrotd.writer import KeysetSpec, KeysetWriter


def cmd_import(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    now = clock()
    retired = args.as_state == "retired"
    if not retired and args.until is not None:
        raise UsageError("--until is for --as retired", "leave --until out, or add --as retired")
    if retired and args.until is None:
        raise UsageError(
            "--as retired needs --until T: when the key leaves the JWKS",
            "add e.g. --until 30d, after the last token it signed expires",
        )
    until = None if args.until is None else _until(args.until, now)
    keyset = settings.keyset(args.keyset)
    path = Path(args.file)
    key = read_key_file(path, keyset.algorithm)
    if keyset.custody != "storage" and (key.private_jwk is not None or not retired):
        # docs/issuers.md: a key that signs is made in custody, never brought in.
        what = (
            "a private key, which would have existed outside custody"
            if key.private_jwk
            else ("a public key, which cannot sign")
        )
        raise KeyrotdError(
            f"keyset {keyset.name} keeps its keys in {keyset.custody} custody: {path} holds {what}",
            "import only a public key, with --as retired --until T (to verify old tokens)",
        )
    if not retired and key.private_jwk is None:
        raise KeyrotdError(
            f"{path} holds a public key; a key that signs needs its private half",
            "import the private key, or add --as retired --until T to publish it for "
            "verification only",
        )
    if key.stated_kid is not None and key.stated_kid != key.kid:
        print(
            f"keyrotd: note: {path} states kid {key.stated_kid}, but keyrotd names keys by their "
            f"RFC 7638 thumbprint, {key.kid}: tokens carrying kid {key.stated_kid} will not find "
            "it in the JWKS",
            file=sys.stderr,
        )
    manager = KeysetWriter(storage, KeysetSpec.from_settings(keyset), clock)
    outcome = manager.apply(Import(key.kid, key.alg, key.public_jwk, key.private_jwk, until=until))
    print_transitions(manager.name, outcome.transitions)
    if retired:
        assert until is not None
        print(f"{manager.name}: imported {key.kid}, published until {rfc3339(until)}")
    else:
        print(f"{manager.name}: imported {key.kid}, the signing key from now on")
    return 0


def _until(text: str, now: datetime) -> datetime:
    try:
        until = now + parse_duration(text)
    except ValueError:
        try:
            until = utc(datetime.fromisoformat(text))
        except ValueError:
            raise UsageError(
                f"--until {text!r} is neither a time nor a duration",
                "give e.g. 2026-12-31T00:00:00Z or 30d",
            ) from None
    if until <= now:
        raise UsageError(
            f"--until {rfc3339(until)} is not in the future", "give a later time, or a duration"
        )
    return until
