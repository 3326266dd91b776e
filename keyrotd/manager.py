"""The writer's old name: re-exports :mod:`keyrotd.keysets` (and the clock words it once held)
until every caller imports them from their own module."""

from __future__ import annotations

from keyrotd.keysets import (
    PUBLICATION_SLACK,
    KeyFactory,
    KeysetManager,
    KeysetSpec,
    Loaded,
    Outcome,
    SyncFailed,
    log_transition,
)
from keyrotd.times import CLOCK_JUMP, Clock, utc_now

__all__ = [
    "CLOCK_JUMP",
    "PUBLICATION_SLACK",
    "Clock",
    "KeyFactory",
    "KeysetManager",
    "KeysetSpec",
    "Loaded",
    "Outcome",
    "SyncFailed",
    "log_transition",
    "utc_now",
]
