"""The operator commands behind the CLI, at the time the clock tells; each works directly on
storage (G6-safe)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from importlib.resources import files

from keyrotd import logs
from keyrotd.cli.handover import handover_notices
from keyrotd.cli.preflight import preflight
from keyrotd.config import KeysetSettings, Settings, load_settings
from keyrotd.durations import format_duration
from keyrotd.errors import KeyrotdError
from keyrotd.inspection.verdict import lifecycle_report
from keyrotd.keysets import KeysetManager, KeysetSpec, Outcome
from keyrotd.lifecycle import Revoke, Rotate, Transition, next_transition
from keyrotd.model import Key, Keyset
from keyrotd.propagation import held_report, progress_report
from keyrotd.storage import Storage, open_storage
from keyrotd.timeline import render_status
from keyrotd.times import Clock, rfc3339

Command = Callable[[Settings, Storage, argparse.Namespace, Clock], int]
"""A storage command: the settings, the open storage, the arguments, the clock."""


def dispatch(args: argparse.Namespace, clock: Clock) -> int:
    if args.command == "check-config" and args.example:
        return print_example()  # whatever the configuration: the hints of its errors point here
    settings = load_settings(args.config)
    if args.command in ("run", "check-config"):
        preflight(settings, clock())  # the same refusals, before anything is bound or read
    if args.command == "run":
        from keyrotd.daemon import run_daemon

        return run_daemon(settings, args.config)
    # Commands log only warnings (emergencies) to stderr; their results go to stdout.
    level = "warning" if settings.logging.level in {"debug", "info"} else settings.logging.level
    logs.configure(settings.logging.format, level)
    if args.command == "check-config":
        return check_config(settings, clock)
    if args.command == "inspect":
        from keyrotd.cli.inspect import run_inspect

        return run_inspect(settings, args, clock)
    storage = open_storage(settings.storage)
    try:
        handler: Command = COMMANDS[args.command]
        return handler(settings, storage, args, clock)
    finally:
        storage.close()


def manager(settings: Settings, storage: Storage, name: str | None, clock: Clock) -> KeysetManager:
    return KeysetManager(storage, KeysetSpec.from_settings(settings.keyset(name)), clock)


def emit(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def require_keys(keyset: Keyset, location: str) -> None:
    if not keyset.keys:
        raise KeyrotdError(
            f"keyset {keyset.name} has no keys yet ({location})",
            "run `keyrotd rotate` once, or start `keyrotd run`",
        )


def cmd_jwks(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    mgr = manager(settings, storage, args.keyset, clock)
    keyset = mgr.view()
    require_keys(keyset, storage.location(mgr.name))
    emit(keyset.jwks())
    return 0


def cmd_signing_key(
    settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock
) -> int:
    mgr = manager(settings, storage, args.keyset, clock)
    keyset = mgr.view()
    require_keys(keyset, storage.location(mgr.name))
    active = keyset.active
    if active is None:
        raise KeyrotdError(f"keyset {keyset.name} has no active key", "run `keyrotd rotate --now`")
    emit(dict(active.private()))
    return 0


def cmd_rotate(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    mgr = manager(settings, storage, args.keyset, clock)
    outcome = mgr.apply(Rotate(now=args.now))
    print_handover(settings, mgr, outcome)
    print_transitions(mgr.name, outcome.transitions)
    successor = outcome.keyset.successor
    if successor and successor.activates_at is not None:
        print(
            f"{mgr.name}: {successor.kid} is published and activates at "
            f"{rfc3339(successor.activates_at)}"
        )
    elif successor and successor.awaiting:
        print(f"{mgr.name}: {successor.kid} is published and awaits confirmation (observe)")
    elif not outcome.transitions:
        print(f"{mgr.name}: nothing to do")
    return 0


def cmd_revoke(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    mgr = manager(settings, storage, args.keyset, clock)
    outcome = mgr.apply(Revoke(args.kid))
    if not any(t.event == "key.revoked" for t in outcome.transitions):
        entry = outcome.keyset.find(args.kid)
        state = entry.state.value if entry else "gone"
        print(f"{mgr.name}: {args.kid} is already {state} and out of the JWKS; nothing to do")
    print_handover(settings, mgr, outcome)
    print_transitions(mgr.name, outcome.transitions)
    return 0


def print_handover(settings: Settings, mgr: KeysetManager, outcome: Outcome) -> None:
    """After an emergency: who may reject what, from the real publication times."""
    server = settings.server
    for line in handover_notices(
        outcome.keyset,
        outcome.transitions,
        mgr.spec.policy,
        server.refresh_interval,
        server.jwks_max_age,
    ):
        print(line)


def print_transitions(name: str, transitions: tuple[Transition, ...]) -> None:
    for t in transitions:
        note = f" (exception to publish-ahead: {t.exception})" if t.exception else ""
        print(f"{name}: {t.event} {t.kid} at {rfc3339(t.at)}{note}")


def cmd_status(settings: Settings, storage: Storage, args: argparse.Namespace, clock: Clock) -> int:
    chosen = [settings.keyset(args.keyset)] if args.keyset else list(settings.keysets)
    now = clock()
    if args.json:
        emit({"now": rfc3339(now), "keysets": [status_report(ks, storage, now) for ks in chosen]})
        return 0
    width = shutil.get_terminal_size().columns
    for ks in chosen:
        keyset, location = status_view(ks, storage, now)
        text = render_status(
            keyset, ks.policy, now, width, algorithm=ks.algorithm, location=location
        )
        sys.stdout.write(text)
    return 0


def status_view(ks: KeysetSettings, storage: Storage, now: datetime) -> tuple[Keyset, str]:
    """The keyset as readers see it at ``now``, and where it is stored."""
    from keyrotd.lifecycle import view

    loaded = KeysetManager(storage, KeysetSpec.from_settings(ks)).load()
    return view(loaded.keyset, ks.policy, now), loaded.location


def status_report(ks: KeysetSettings, storage: Storage, now: datetime) -> dict[str, object]:
    mgr = KeysetManager(storage, KeysetSpec.from_settings(ks))
    loaded = mgr.load()
    from keyrotd.lifecycle import view

    keyset = view(loaded.keyset, ks.policy, now)
    upcoming = next_transition(keyset, ks.policy)
    successor = keyset.successor
    return {
        "name": ks.name,
        "algorithm": ks.algorithm,
        "location": loaded.location,
        "version": loaded.version,
        "revision": loaded.keyset.revision,
        "updated_at": rfc3339(keyset.updated_at) if keyset.updated_at else None,
        "keys": [key_report(k) for k in keyset.keys],
        "history": [key_report(k) for k in keyset.history],
        "next_transition": rfc3339(upcoming) if upcoming else None,
        "next_transition_in": format_duration(upcoming - now) if upcoming else None,
        # CONTRACT 9: null until the successor is confirmed; the hold, if any
        "next_activates_at": rfc3339(successor.activates_at)
        if successor and successor.activates_at
        else None,
        "held": held_report(keyset.pending, now),
    }


def key_report(key: Key) -> dict[str, object]:
    """As ``inspect`` reports a key, and its propagation while it awaits confirmation."""
    report = lifecycle_report(key)
    if key.propagation is not None:
        report["propagation"] = progress_report(key)
    return report


def check_config(settings: Settings, clock: Clock) -> int:
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


COMMANDS: dict[str, Command] = {
    "backup": cmd_backup,
    "restore": cmd_restore,
    "jwks": cmd_jwks,
    "signing-key": cmd_signing_key,
    "rotate": cmd_rotate,
    "revoke": cmd_revoke,
    "status": cmd_status,
}
