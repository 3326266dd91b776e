"""When the planner will next need a freshly generated key: the daemon prepares it just before."""

from __future__ import annotations

from datetime import datetime

from keyrotd.model import Keyset, Policy


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
