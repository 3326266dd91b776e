"""What ``rotate`` may do and what it says of it, pure: the times are inputs, like ``now``.

``rotate --now`` makes a successor sign before ``publish_ahead`` (an exception to G2). That is
safe only once every verifier can hold the successor: a daemon serves a write within
``refresh_interval`` and a verifier refetches within ``max(jwks_max_age, verifier_cache)``
(:func:`keyrotd.config.policy.settle_time`, the same sum the policy check requires
``publish_ahead`` to exceed). :func:`refuse_rotate_now` is that rule; the planner applies it
(``Rotate.settle``) on the document it writes, for the CLI and the daemon alike.
:func:`successor_note` is the line both give after a rotate (docs/cli.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from keyrotd.durations import format_duration
from keyrotd.errors import RefusedError
from keyrotd.lifecycle.events import Transition
from keyrotd.model import Key, Keyset
from keyrotd.times import rfc3339

SETTLE_SUM = "refresh_interval + max(jwks_max_age, verifier_cache)"


@dataclass(frozen=True)
class RotateTimes:
    """What a keyset's rotate needs beyond its document: ``publish_ahead`` and ``settle``, the
    least age of a successor for ``--now`` (:func:`keyrotd.config.policy.settle_time`)."""

    publish_ahead: timedelta
    settle: timedelta


@dataclass(frozen=True)
class Words:
    """How an operator asks for ``--now`` and ``--force``: on the command line or over HTTP."""

    now: str
    force: str
    publish: str


CLI = Words("`keyrotd rotate --now`", "--force", "run `keyrotd rotate` now to publish one")
HTTP = Words("`?now=true`", "force=true", "POST rotate without now to publish one")


def refuse_rotate_now(name: str, successor: Key | None, now: datetime, settle: timedelta) -> None:
    """Raise :class:`RefusedError` unless ``successor`` was published ``settle`` ago or more."""
    if successor is None:
        after = f"{format_duration(settle)} after its publication"
        message = (
            f"keyset {name}: refusing rotate --now: no successor is published, and a new key "
            f"would sign before verifiers hold it ({SETTLE_SUM} = {after})"
        )
        ready = _iso(now + settle)

        def no_successor(words: Words) -> str:
            return (
                f"{words.publish} and {words.now} from {ready}, or add {words.force} to sign "
                "with a new key at once"
            )

        raise RefusedError(message, no_successor(CLI), no_successor(HTTP))
    ready_at = successor.created_at + settle
    if now >= ready_at:
        return
    age = format_duration(timedelta(seconds=int((now - successor.created_at).total_seconds())))
    message = (
        f"keyset {name}: refusing rotate --now: its successor {successor.kid} was published at "
        f"{_iso(successor.created_at)}, {age} ago, and verifiers may not hold it before "
        f"{_iso(ready_at)} ({SETTLE_SUM} = {format_duration(settle)} after its publication): "
        "they could reject the tokens it signs"
    )

    def young(words: Words) -> str:
        again = f"run {words.now} again" if words is CLI else "ask again"
        return f"{again} from {_iso(ready_at)}, or add {words.force} to activate it anyway"

    raise RefusedError(message, young(CLI), young(HTTP))


def successor_note(
    keyset: Keyset,
    transitions: tuple[Transition, ...],
    times: RotateTimes,
    now: datetime,
    words: Words = CLI,
) -> tuple[str, bool] | None:
    """The line said after a rotate about the next key, and whether it says "nothing to bring
    forward" (the successor was there before the rotate, and no sooner time is allowed)."""
    successor = keyset.successor
    if successor is None:
        return None
    name = keyset.name
    created = any(t.event == "key.created" and t.kid == successor.kid for t in transitions)
    if created or any(t.event == "key.activated" for t in transitions):
        if successor.activates_at is None:
            return f"{name}: {successor.kid} is published and awaits confirmation (observe)", False
        activates = rfc3339(successor.activates_at)
        return f"{name}: {successor.kid} is published and activates at {activates}", False
    if successor.activates_at is None:
        when = "awaits confirmation that every observed URL serves it (observe)"
    elif successor.propagation is not None:
        when = f"activates at {_iso(successor.activates_at)}, as its confirmation set (observe)"
    else:
        ahead = format_duration(times.publish_ahead)
        when = f"activates at {_iso(successor.activates_at)}, as soon as publish_ahead ({ahead})"
        when += " allows"
    ready_at = successor.created_at + times.settle
    emergency = f"{words.now} activates it at once, as an emergency"
    if now < ready_at:
        emergency += f", from {_iso(ready_at)} (before that, only with {words.force})"
    note = (
        f"{name}: nothing to bring forward: {successor.kid}, published at "
        f"{_iso(successor.created_at)}, {when}; {emergency}"
    )
    return note, True


def _iso(value: datetime) -> str:
    """To the second, as every notice writes a time."""
    return rfc3339(value, "seconds")
