"""``keyrotd sign [CLAIMS|-] [--keyset N] [--lifetime S]``: a token signed by the keyset's active
key, read from storage, under the rules of the signing API (``keyrotd.signing``, docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import sys

from keyrotd.cli.output import require_keys
from keyrotd.config import Settings
from keyrotd.custody.interface import CustodySigner
from keyrotd.durations import parse_duration
from keyrotd.errors import KeyrotdError, UsageError
from keyrotd.issuer_sources import Signer
from keyrotd.signing import SigningKey, SignRefused, request_of, sign
from keyrotd.storage import Storage
from keyrotd.times import Clock
from keyrotd.writer import KeysetSpec, KeysetWriter


def cmd_sign(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    text = sys.stdin.read() if args.claims == "-" else args.claims
    if not text.strip():
        raise UsageError("no claims given", 'pass a JSON object, e.g. \'{"sub": "alice"}\'')
    try:
        claims = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise SignRefused("the claims are not JSON", "pass a JSON object") from None
    keyset_settings = settings.keyset(args.keyset)
    request = request_of(claims, _lifetime(args.lifetime))
    manager = KeysetWriter(storage, KeysetSpec.from_settings(keyset_settings), clock)
    now = clock()
    keyset = manager.view(now)
    require_keys(keyset, storage.location(manager.name))
    active = keyset.active
    if active is None or not active.holds_private:
        raise KeyrotdError(f"keyset {keyset.name} has no active key", "start `keyrotd run`")
    signer: SigningKey
    if active.handle is not None:  # in a token or KMS: it signs there
        from keyrotd.custody import open_custody

        custody = open_custody(settings, keyset_settings.custody)
        signer = CustodySigner(active.kid, active.alg, active.handle, custody)
    else:
        signer = Signer.of(active.private())
    signed = sign(
        request,
        signer,
        now=now,
        token_lifetime=keyset_settings.token_lifetime,
        issuer=keyset_settings.issuer,
    )
    print(signed.token)
    return 0


def _lifetime(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UsageError(f"--lifetime: {exc}", "give whole seconds, e.g. 300 or 5m") from None
    if seconds != int(seconds):
        raise UsageError(f"--lifetime {text} is not whole seconds", "give e.g. 300 or 5m")
    return int(seconds)


def _no_constant(name: str) -> None:
    raise ValueError(name)
