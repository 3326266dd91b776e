"""One keyset's entry of ``keyrotd status --json``, as a pure function of what was read.

The CLI (``status --json``), the daemon's ``GET /keysets/{name}/status`` and its HTML page
(``daemon/status_page.py``) all build an entry here, so that a state is computed once, one way.
"""

from __future__ import annotations

from datetime import datetime

from keyrotd.config import KeysetSettings
from keyrotd.durations import format_duration
from keyrotd.inspection.verdict import lifecycle_report
from keyrotd.lifecycle.due import next_transition
from keyrotd.model import Key, Keyset
from keyrotd.propagation import held_report, progress_report
from keyrotd.times import rfc3339


def keyset_status(
    settings: KeysetSettings,
    keyset: Keyset,
    location: str,
    version: str | None,
    now: datetime,
) -> dict[str, object]:
    """The entry of a keyset ``keyset`` as readers see it at ``now`` (``lifecycle.view``)."""
    upcoming = next_transition(keyset, settings.policy)
    successor = keyset.successor
    return {
        "name": settings.name,
        "algorithm": settings.algorithm,
        "custody": settings.custody,
        "location": location,
        "version": version,
        "revision": keyset.revision,
        "updated_at": rfc3339(keyset.updated_at) if keyset.updated_at else None,
        "keys": [key_report(k) for k in keyset.keys],
        "history": [key_report(k) for k in keyset.history],
        "next_transition": rfc3339(upcoming) if upcoming else None,
        "next_transition_in": format_duration(upcoming - now) if upcoming else None,
        # docs/guarantees.md: null until the successor is confirmed; the hold, if any
        "next_activates_at": rfc3339(successor.activates_at)
        if successor and successor.activates_at
        else None,
        "held": held_report(keyset.pending, now),
    }


def key_report(key: Key) -> dict[str, object]:
    """As ``inspect`` reports a key, and its propagation while it awaits confirmation."""
    report = lifecycle_report(key)
    if key.in_custody:
        # where the private half is: the custody object (its handle), or destroyed there
        report["handle"] = key.handle
        report["private_key"] = "in custody" if key.holds_private else "destroyed"
    if key.propagation is not None:
        report["propagation"] = progress_report(key)
    return report
