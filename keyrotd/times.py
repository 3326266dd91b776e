"""The clock vocabulary: the time now, RFC 3339 text, and the rule that tells a clock jump.

Nothing deep in keyrotd reads the clock itself: a :data:`Clock` is passed in, and
:func:`utc_now` is the one that reads the real one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware in UTC."""

CLOCK_JUMP: Final = timedelta(seconds=0.5)
"""A wall clock that ran this much ahead of the monotonic clock between two readings jumped."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime, timespec: Literal["auto", "seconds", "milliseconds"] = "auto") -> str:
    """``2026-12-01T12:00:00Z`` (with the fraction of a second that ``timespec`` keeps)."""
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def forward_jump(wall_elapsed: timedelta, monotonic_elapsed: timedelta) -> timedelta | None:
    """How far the wall clock jumped ahead of the monotonic one over the same interval, if it
    jumped (more than :data:`CLOCK_JUMP`); a schedule postponed by it must add the margin
    :data:`CLOCK_JUMP` too, since the two clocks are read a moment apart."""
    jump = wall_elapsed - monotonic_elapsed
    return jump if jump > CLOCK_JUMP else None
