"""When the plan next changes by itself, as the planner's rule says (``Planner.due``).

Nothing here restates the rule: each answer is read off the planner's own times, so a rule
changed in :class:`~keyrotd.lifecycle.planner.Planner` moves the scheduler's wake-ups, the
served views' recompute and cache times, ``status`` and its timeline with it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from keyrotd.lifecycle.events import Due
from keyrotd.lifecycle.planner import Planner
from keyrotd.model import Keyset, Policy

ANY_TIME: Final = datetime.min.replace(tzinfo=UTC)
"""The planner's ``now`` for its due times, which do not depend on it."""
VIEW_EVENTS: Final = frozenset({"key.activated", "key.expired"})
"""What ``view`` applies by itself, without a write (creating a key takes one)."""


def _planner(keyset: Keyset, policy: Policy) -> Planner:
    return Planner(keyset, policy, ANY_TIME, ())


def due_times(keyset: Keyset, policy: Policy) -> tuple[Due, ...]:
    """Every instant at which ``keyset`` next changes by itself, soonest first."""
    return _planner(keyset, policy).due()


def next_due(keyset: Keyset, policy: Policy) -> Due | None:
    """The next change by itself: an activation, an expiry or a successor due."""
    return next(iter(due_times(keyset, policy)), None)


def next_transition(keyset: Keyset, policy: Policy) -> datetime | None:
    """When the keyset next changes by itself: an activation, an expiry or a successor due."""
    due = next_due(keyset, policy)
    return None if due is None else due.at


def next_view_change(keyset: Keyset, policy: Policy) -> datetime | None:
    """The next activation or expiry, the changes ``view`` applies without a write."""
    due = [d.at for d in due_times(keyset, policy) if d.event in VIEW_EVENTS]
    return due[0] if due else None


def next_key_needed_at(keyset: Keyset, policy: Policy) -> datetime | None:
    """When a new successor becomes due: that of the last scheduled key (the latest pending
    key's, else the active key's). None: a key is needed now (nothing is scheduled yet)."""
    return _planner(keyset, policy).key_needed_at()


def expires_after(keyset: Keyset, policy: Policy, retired_at: datetime) -> datetime:
    """When a key of ``keyset`` that stops signing at ``retired_at`` will leave the JWKS."""
    return _planner(keyset, policy).expires_after(retired_at)
