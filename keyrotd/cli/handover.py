"""What an emergency does to verifiers, said from the real publication times.

``rotate --now`` and revoking the active key make a key sign before it has been published for
``publish_ahead`` (an exception to G2), and a revoke drops a key at once. Which verifiers may
reject which tokens follows from when the new signing key was published, how soon daemons serve
a change written to storage (``refresh_interval``) and how long a JWKS answer may be cached
(``jwks_max_age``). :func:`handover_notices` is a pure function of those.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from keyrotd.durations import format_duration
from keyrotd.lifecycle.events import FIRST_KEY, Transition
from keyrotd.model import Keyset, Policy
from keyrotd.times import rfc3339


def handover_notices(
    keyset: Keyset,
    transitions: tuple[Transition, ...],
    policy: Policy,
    refresh_interval: timedelta,
    jwks_max_age: timedelta,
) -> list[str]:
    """The lines to print after ``transitions`` left ``keyset``: who may reject what."""
    lines: list[str] = []
    revoked = [t for t in transitions if t.event == "key.revoked"]
    for t in transitions:
        if t.event != "key.activated" or t.exception in (None, FIRST_KEY):
            continue
        was_active = next((r.kid for r in revoked if r.at == t.at and _was_active(keyset, r)), None)
        head = (
            f"EMERGENCY ROTATION of keyset {keyset.name}"
            if was_active is None
            else f"REVOKED the active key {was_active} of keyset {keyset.name}"
        )
        lines.append(
            f"{head}: {t.kid} signs from {_iso(t.at)}, an exception to publish_ahead "
            f"({format_duration(policy.publish_ahead)})"
        )
        key = keyset.find(t.kid)
        if key is not None:
            lines.append("  " + _new_key(key.created_at, t.at, refresh_interval, jwks_max_age))
    for r in revoked:
        served = r.at + refresh_interval
        lines.append(
            f"  tokens signed with {r.kid} are rejected by verifiers whose JWKS was fetched "
            f"after {_iso(served)}; a verifier holding an older copy accepts them until it "
            f"refetches (by {_iso(served + jwks_max_age)} if it honours Cache-Control)"
        )
    return lines


def _was_active(keyset: Keyset, revoke: Transition) -> bool:
    entry = keyset.find(revoke.kid)
    return entry is not None and entry.retired_at == revoke.at


def _new_key(
    published: datetime, now: datetime, refresh_interval: timedelta, jwks_max_age: timedelta
) -> str:
    age = _seconds(now - published)
    when = "just now" if not age else f"at {_iso(published)}, {format_duration(age)} ago"
    served = published + refresh_interval
    refetched = served + jwks_max_age
    honouring = "hold it already" if refetched <= now else f"have refetched by {_iso(refetched)}"
    return (
        f"it was published {when}: verifiers whose JWKS was fetched before {_iso(served)} (a "
        f"daemon serves a change within refresh_interval, {format_duration(refresh_interval)}) "
        "may reject tokens signed with it until they refetch; those that honour Cache-Control "
        f"(max-age {format_duration(jwks_max_age)}) {honouring}"
    )


def _seconds(duration: timedelta) -> timedelta:
    return timedelta(seconds=round(duration.total_seconds()))


def _iso(value: datetime) -> str:
    """To the second, as every notice writes a time."""
    return rfc3339(value, "seconds")
