"""What a daemon logs of one keyset: each transition once, and its failures without a flood.

:class:`Journal`: every lifecycle transition this daemon sees, once. Its own writes are logged as
the writer makes them (``"by": "self"``, through :meth:`Journal.own`); what a CLI or another
replica wrote is found by comparing each document read with what the journal has logged or taken
as given (``"by": "storage"``). The first document a daemon reads is taken as given: it logs
what changes after, not the history before it started.

:class:`Failures`: ``storage.read_failed``, ``storage.write_failed`` and ``key.rotation_failed``
once when they start and at most once every :data:`REPEAT` while they go on (``count``: the
failures since the last line), then ``storage.recovered`` once when the keyset works again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Final, Literal

from keyrotd.lifecycle.events import EventName, Transition
from keyrotd.model import Key, Keyset, KeyState
from keyrotd.writer_outcomes import log_transition

log = logging.getLogger("keyrotd.daemon")

REPEAT: Final = 60.0
"""Seconds between two lines of the same failure of a keyset while it goes on."""
FailureEvent = Literal["storage.read_failed", "storage.write_failed", "key.rotation_failed"]
FAILED: Final[dict[FailureEvent, str]] = {
    "storage.read_failed": "storage read failed",
    "storage.write_failed": "storage write failed",
    "key.rotation_failed": "rotation failed",
}
ORDER: Final[dict[EventName, int]] = {
    "key.created": 0,
    "key.activated": 1,
    "key.retired": 2,
    "key.expired": 3,
    "key.revoked": 3,
}


def transitions_of(key: Key) -> list[Transition]:
    """The transitions a stored key has been through, read from its state and its times."""
    state, created = key.state, key.created_at
    ended = state in (KeyState.RETIRED, KeyState.EXPIRED, KeyState.REVOKED)
    events: list[tuple[EventName, datetime | None]] = [("key.created", created)]
    if state is KeyState.ACTIVE or (ended and key.retired_at and key.activates_at):
        events.append(("key.activated", key.activates_at))
    if state is KeyState.REVOKED:
        if key.retired_at and key.expires_at:  # retired, then revoked (revoking the active
            events.append(("key.retired", key.retired_at))  # key sets no expiry)
        events.append(("key.revoked", key.revoked_at))
    elif ended:
        events.append(("key.retired", key.retired_at))
        if state is KeyState.EXPIRED:
            events.append(("key.expired", key.expires_at))
    return [Transition(event, key.kid, at or created) for event, at in events]


class Journal:
    """The lifecycle lines of one keyset in one daemon (see the module docstring)."""

    def __init__(self, keyset: str) -> None:
        self.keyset = keyset
        self._logged: dict[str, set[str]] = {}
        """Per kid, the events logged or taken as given."""
        self._started = False
        self._lock = threading.Lock()

    def own(self, keyset: str, transition: Transition) -> None:
        """A transition this daemon wrote (the writer's ``on_transition``)."""
        with self._lock:
            logged = self._logged.setdefault(transition.kid, set())
            if transition.event in logged:
                return
            logged.add(transition.event)
        log_transition(keyset, transition, by="self")

    def saw(self, stored: Keyset) -> None:
        """A document read or written: log what others changed since the last one."""
        with self._lock:
            found: list[Transition] = []
            for key in (*stored.keys, *stored.history):
                logged = self._logged.setdefault(key.kid, set())
                for transition in transitions_of(key):
                    if transition.event not in logged:
                        logged.add(transition.event)
                        found.append(transition)
            kids = {key.kid for key in (*stored.keys, *stored.history)}
            for kid in [kid for kid in self._logged if kid not in kids]:
                del self._logged[kid]  # left the document's bounded history
            started, self._started = self._started, True
        if not started:
            return  # the state it started from, not transitions it saw
        for transition in sorted(found, key=lambda t: (t.at, ORDER.get(t.event, 4))):
            log_transition(self.keyset, transition, by="storage")


class Failures:
    """The failure lines of one keyset in one daemon (see the module docstring)."""

    def __init__(self, keyset: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.keyset = keyset
        self._monotonic = monotonic
        self._logged_at: dict[FailureEvent, float] = {}
        self._unlogged: dict[FailureEvent, int] = {}
        self._lock = threading.Lock()

    def failed(self, event: FailureEvent, reason: str) -> None:
        """Log ``event`` if it is new, or its last line is :data:`REPEAT` old."""
        now = self._monotonic()
        with self._lock:
            last = self._logged_at.get(event)
            if last is not None and now - last < REPEAT:
                self._unlogged[event] = self._unlogged.get(event, 0) + 1
                return
            self._logged_at[event] = now
            count = self._unlogged.pop(event, 0) + 1
        # the reason goes in the ``error`` field only (the text format appends it)
        log.error(
            "keyset %s: %s",
            self.keyset,
            FAILED[event],
            extra={"event": event, "keyset": self.keyset, "error": reason, "count": count},
        )

    def succeeded(self) -> None:
        """The keyset was read (or written): ``storage.recovered`` if it was failing."""
        with self._lock:
            if not self._logged_at:
                return
            self._logged_at.clear()
            self._unlogged.clear()
        log.info(
            "keyset %s: storage works again",
            self.keyset,
            extra={"event": "storage.recovered", "keyset": self.keyset},
        )
