"""What the writer reports: what it read and wrote, how a sync failed, one log line an event.

Also :func:`read_keyset`, the same read for a command that never writes (``status``), which
need not import the writer."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from keyrotd.lifecycle.events import FIRST_KEY, Transition
from keyrotd.model import Keyset, from_json
from keyrotd.times import rfc3339

if TYPE_CHECKING:
    from keyrotd.storage.interface import Storage

log = logging.getLogger("keyrotd")


@dataclass(frozen=True)
class Loaded:
    """A keyset as read from storage: ``version`` is None when it was never written."""

    keyset: Keyset
    version: str | None
    location: str


def read_keyset(storage: Storage, name: str) -> Loaded:
    """The keyset ``name`` as stored (an empty one, version None, when it was never written):
    what ``KeysetWriter.load`` reads, for a reader that needs no writer."""
    stored = storage.read(name)
    if stored is None:
        return Loaded(Keyset(name), None, storage.location(name))
    return Loaded(from_json(stored.data, stored.location), stored.version, stored.location)


@dataclass(frozen=True)
class Outcome:
    """What one ``apply`` or ``sync`` did: the keyset after it, and whether it wrote."""

    keyset: Keyset
    transitions: tuple[Transition, ...]
    written: bool
    attempts: int


class SyncFailed(Exception):
    """``sync`` failed: ``stage`` says where, ``cause`` is the error, ``read`` the stored keyset
    it had read (None: nothing stored, or the read itself failed). Never leaves the daemon."""

    def __init__(
        self, stage: Literal["storage read", "rotation"], cause: Exception, read: Keyset | None
    ) -> None:
        super().__init__(stage)
        self.stage: Literal["storage read", "rotation"] = stage
        self.cause = cause
        self.read = read


def log_transition(keyset: str, transition: Transition, by: str = "self") -> None:
    """One log line per lifecycle event (``key.created`` …): keyset and kid, no key material.

    ``by``: ``self`` when the logging process made the change, ``storage`` when a daemon found
    it in storage, made by a CLI or another replica (``keyrotd.daemon.journal``)."""
    extra = {
        "event": transition.event,
        "keyset": keyset,
        "kid": transition.kid,
        "at": rfc3339(transition.at),
        "by": by,
    }
    found = "" if by == "self" else " (found in storage)"
    if transition.exception:
        extra["exception"] = transition.exception
        # A new keyset's first key is expected; every other exception deserves attention.
        level = logging.INFO if transition.exception == FIRST_KEY else logging.WARNING
        log.log(
            level,
            "%s %s kid=%s (exception to publish-ahead: %s)",
            transition.event,
            keyset,
            transition.kid,
            transition.exception,
            extra=extra,
        )
    else:
        log.info("%s %s kid=%s%s", transition.event, keyset, transition.kid, found, extra=extra)
