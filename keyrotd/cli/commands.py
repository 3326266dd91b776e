"""The operator commands behind the CLI, at the time the clock tells; each works directly on
storage (G6-safe).

A module only some commands need is imported by them (``preflight`` by ``run`` and
``check-config``, the emergency notices by ``rotate`` and ``revoke``, the ``--json`` entry by
``status --json``): ``status`` starts in a few milliseconds more than its unavoidable imports
(tests/test_cli_startup.py, docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from importlib.resources import files
from typing import TYPE_CHECKING

from keyrotd import logs
from keyrotd.cli.output import print_transitions, require_keys
from keyrotd.cli.unconfigured import unconfigured, unconfigured_note
from keyrotd.config import KeysetSettings, Settings, load_settings
from keyrotd.config.policy import rotate_times
from keyrotd.durations import format_duration
from keyrotd.errors import KeyNotFoundError, KeyrotdError, UsageError
from keyrotd.model import Keyset, from_json
from keyrotd.status_timeline import render_status
from keyrotd.storage import Storage, open_storage
from keyrotd.storage.registry import require_store as check_store
from keyrotd.times import Clock, rfc3339
from keyrotd.writer_outcomes import read_keyset

if TYPE_CHECKING:
    from keyrotd.writer import KeysetWriter, Outcome

log = logging.getLogger("keyrotd.config")

Command = Callable[[Settings, Storage, argparse.Namespace, Clock], int]
"""A storage command: the settings, the open storage, the arguments, the clock."""


def dispatch(args: argparse.Namespace, clock: Clock) -> int:
    if args.command == "check-config" and args.example:
        return print_example()  # whatever the configuration: the hints of its errors point here
    settings = load_settings(args.config)
    warnings: list[str] = []
    if args.command in ("run", "check-config"):
        from keyrotd.cli.preflight import preflight

        # the same refusals and warnings, before anything is bound or read
        warnings = preflight(settings, clock())
    if args.command == "run":
        from keyrotd.daemon import run_daemon

        logs.configure(settings.logging.format, settings.logging.level)
        for warning in warnings:
            log.warning(warning, extra={"event": "config.warning"})
        return run_daemon(settings, args.config)
    # Commands log only warnings (emergencies) to stderr; their results go to stdout.
    level = "warning" if settings.logging.level in {"debug", "info"} else settings.logging.level
    logs.configure(settings.logging.format, level)
    if args.command == "check-config":
        for warning in warnings:
            print(f"keyrotd: warning: {warning}", file=sys.stderr)
        return check_config(settings)
    if args.command == "inspect":
        from keyrotd.cli.inspect import run_inspect

        return run_inspect(settings, args, clock)
    storage = open_storage(settings.storage)  # a bad encryption key file: exit 2 first
    try:
        if args.command in READERS:
            require_store(settings)
        handler: Command = COMMANDS[args.command]
        return handler(settings, storage, args, clock)
    finally:
        storage.close()


READERS = frozenset({"status", "jwks", "signing-key", "revoke"})
"""Commands that use a store but never create one (``inspect`` too: it exits 3 without one).
The writers -- ``run`` and ``rotate`` -- create it where the configuration points."""


def require_store(settings: Settings) -> None:
    check_store(settings.storage, settings.source)


def manager(settings: Settings, storage: Storage, name: str | None, clock: Clock) -> KeysetWriter:
    from keyrotd.writer import KeysetSpec, KeysetWriter  # the writers; status only reads

    spec = KeysetSpec.from_settings(settings.keyset(name))
    custody = None
    if spec.custody != "storage":
        from keyrotd.custody import open_custody  # the token's or KMS's library: only then

        custody = open_custody(settings, spec.custody)
    return KeysetWriter(storage, spec, clock, custody=custody)


def one_line(text: str) -> str:
    return " ".join(text.split())


def emit(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def cmd_jwks(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    mgr = manager(settings, storage, args.keyset, clock)
    keyset = mgr.view()
    require_keys(keyset, storage.location(mgr.name))
    emit(keyset.jwks())
    return 0


def cmd_signing_key(
    settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock
) -> int:
    from keyrotd.custody.interface import PrivateKeyUnavailableError

    chosen = settings.keyset(args.keyset)
    if chosen.custody != "storage":
        raise PrivateKeyUnavailableError(chosen.name, chosen.custody)
    mgr = manager(settings, storage, args.keyset, clock)
    keyset = mgr.view()
    require_keys(keyset, storage.location(mgr.name))
    active = keyset.active
    if active is None:
        raise KeyrotdError(f"keyset {keyset.name} has no active key", "run `keyrotd rotate --now`")
    emit(dict(active.private()))
    return 0


def cmd_rotate(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    if args.force and not args.now:
        raise UsageError("--force goes with --now", "use `keyrotd rotate --now --force`")
    from keyrotd.lifecycle.commands import Rotate  # the writers' commands; status only reads
    from keyrotd.rotating import successor_note

    chosen = settings.keyset(args.keyset)
    times = rotate_times(settings.server, chosen)
    mgr = manager(settings, storage, chosen.name, clock)
    outcome = mgr.apply(Rotate(now=args.now, settle=None if args.force else times.settle))
    print_handover(settings, mgr, outcome)
    print_transitions(mgr.name, outcome.transitions)
    note = successor_note(outcome.keyset, outcome.transitions, times, clock())
    if note is not None:
        print(note[0])
    elif not outcome.transitions:
        print(f"{mgr.name}: nothing to do")
    return 0


def cmd_revoke(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    from keyrotd.lifecycle.commands import Revoke

    name, kid = find_kid(settings, storage, args.kid, args.keyset)
    mgr = manager(settings, storage, name, clock)
    outcome = mgr.apply(Revoke(kid))
    if not any(t.event == "key.revoked" for t in outcome.transitions):
        entry = outcome.keyset.find(kid)
        state = entry.state.value if entry else "gone"
        print(f"{mgr.name}: {kid} is already {state} and out of the JWKS; nothing to do")
    print_handover(settings, mgr, outcome)
    print_transitions(mgr.name, outcome.transitions)
    return 0


def find_kid(
    settings: Settings, storage: Storage, given: str, keyset: str | None
) -> tuple[str, str]:
    """The keyset and the whole kid ``revoke`` acts on: ``given`` is a kid or a prefix of one,
    looked up in ``keyset`` or, without it, in every keyset (one batched read). A keyset that
    cannot be read is reported if the kid is found nowhere else (its error names the document)."""
    from keyrotd.cli.kids import resolve_kid

    names = [settings.keyset(keyset).name] if keyset else [ks.name for ks in settings.keysets]
    readable: dict[str, Keyset] = {}
    unreadable: list[KeyrotdError] = []
    for name, stored in storage.read_many(names).items():
        try:
            if isinstance(stored, KeyrotdError):
                raise stored
            readable[name] = (
                Keyset(name) if stored is None else from_json(stored.data, stored.location)
            )
        except KeyrotdError as exc:
            if keyset:
                raise
            unreadable.append(exc)
    try:
        found = resolve_kid(given, readable)
    except KeyNotFoundError:
        if unreadable:
            raise unreadable[0] from None
        raise
    for failure in unreadable:
        print(f"keyrotd: not searched: {one_line(str(failure))}", file=sys.stderr)
    return found


def print_handover(settings: Settings, mgr: KeysetWriter, outcome: Outcome) -> None:
    """After an emergency: who may reject what, from the real publication times."""
    from keyrotd.cli.handover import handover_notices

    server = settings.server
    for line in handover_notices(
        outcome.keyset,
        outcome.transitions,
        mgr.spec.policy,
        server.refresh_interval,
        server.jwks_max_age,
    ):
        print(line)


def cmd_status(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    chosen = [settings.keyset(args.keyset)] if args.keyset else list(settings.keysets)
    now = clock()
    others = [] if args.keyset else unconfigured(settings, storage)
    if args.json:
        report: dict[str, object] = {"now": rfc3339(now)}
        report["keysets"] = [status_report(ks, storage, now, settings) for ks in chosen]
        emit({**report, "unconfigured": others} if others else report)
        return 0
    width = shutil.get_terminal_size().columns
    for ks in chosen:
        keyset, location = status_view(ks, storage, now)
        text = render_status(
            keyset, ks.policy, now, width, algorithm=ks.algorithm, location=location
        )
        sys.stdout.write(text)
    if others:
        sys.stdout.write(unconfigured_note(others))
    return 0


def status_view(ks: KeysetSettings, storage: Storage, now: datetime) -> tuple[Keyset, str]:
    """The keyset as readers see it at ``now``, and where it is stored."""
    from keyrotd.lifecycle.planner import view

    loaded = read_keyset(storage, ks.name)
    return view(loaded.keyset, ks.policy, now), loaded.location


def status_report(
    ks: KeysetSettings, storage: Storage, now: datetime, settings: Settings | None = None
) -> dict[str, object]:
    """The keyset's entry of ``status --json`` (built by ``keyrotd.status``, as the daemon's)."""
    from keyrotd.lifecycle.planner import view
    from keyrotd.status import keyset_status

    loaded = read_keyset(storage, ks.name)
    keyset = view(loaded.keyset, ks.policy, now)
    report = keyset_status(ks, keyset, loaded.location, loaded.version, now)
    if ks.custody == "aws-kms" and settings is not None:
        _kms_deletion_dates(report, settings)
    return report


def _kms_deletion_dates(report: dict[str, object], settings: Settings) -> None:
    """When KMS deletes each destroyed key (``deletion_due``): KMS keeps it 7 days first."""
    from keyrotd.custody import open_custody
    from keyrotd.custody.aws_kms import KmsCustody

    custody = open_custody(settings, "aws-kms")
    assert isinstance(custody, KmsCustody)
    for section in ("keys", "history"):
        entries = report[section]
        assert isinstance(entries, list)
        for entry in entries:
            if entry.get("private_key") == "destroyed":
                due = custody.deletion_date(str(entry["handle"]))
                entry["deletion_due"] = rfc3339(due) if due else None


def check_config(settings: Settings) -> int:
    print(f"configuration OK ({settings.source})")
    for ks in settings.keysets:
        p = ks.policy
        print(
            f"  keyset {ks.name}: {ks.algorithm}, rotation every "
            f"{format_duration(p.rotation_period)}, published "
            f"{format_duration(p.publish_ahead)} ahead, kept "
            f"{format_duration(p.retention)} after retirement"
        )
    return 0


def print_example() -> int:
    """The commented example configuration shipped in the package (the repository's example)."""
    sys.stdout.write(files("keyrotd").joinpath("example.toml").read_text(encoding="utf-8"))
    return 0


def cmd_backup(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    from keyrotd.cli.backup import cmd_backup

    return cmd_backup(settings, storage, args, clock)


def cmd_restore(
    settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock
) -> int:
    from keyrotd.cli.backup import cmd_restore

    return cmd_restore(settings, storage, args, clock)


def cmd_sign(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    from keyrotd.cli.sign_command import cmd_sign  # the issuer and its HTTP client: sign only

    return cmd_sign(settings, storage, args, clock)


def cmd_import(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    from keyrotd.cli.import_command import cmd_import  # key files (PEM, JWK): import only

    return cmd_import(settings, storage, args, clock)


COMMANDS: dict[str, Command] = {
    "backup": cmd_backup,
    "restore": cmd_restore,
    "jwks": cmd_jwks,
    "signing-key": cmd_signing_key,
    "rotate": cmd_rotate,
    "revoke": cmd_revoke,
    "status": cmd_status,
    "sign": cmd_sign,
    "import": cmd_import,
}
