"""When the plan next changes by itself, as the planner's rule says."""

from __future__ import annotations

from datetime import datetime

from keyrotd.model import Keyset, KeyState, Policy


def next_key_needed_at(keyset: Keyset, policy: Policy) -> datetime | None:
    """The time a new successor becomes due: ``publish_ahead`` before the period of the last
    scheduled key ends (the latest pending key's, else the active key's). None: a key is needed
    now (nothing is scheduled yet)."""
    pending = [k.scheduled_at for k in keyset.pending if k.scheduled_at is not None]
    active = keyset.active
    start = max(pending) if pending else (active.activates_at if active else None)
    if start is None:
        return None
    return start + policy.rotation_period - policy.publish_ahead


def next_transition(keyset: Keyset, policy: Policy) -> datetime | None:
    """When the keyset next changes by itself: an activation, an expiry or a successor due."""
    times: list[datetime] = []
    for key in keyset.keys:
        if key.state is KeyState.PENDING and key.activates_at is not None:
            times.append(key.activates_at)
        elif key.state is KeyState.RETIRED and key.expires_at is not None:
            times.append(key.expires_at)
    active = keyset.active
    if active is not None and active.activates_at is not None and not keyset.pending:
        times.append(active.activates_at + policy.rotation_period - policy.publish_ahead)
    return min(times, default=None)
