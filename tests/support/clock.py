"""The tests' one hand-moved clock: ``ManualClock``, a wall clock tests set forwards or back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 1, tzinfo=UTC)
"""The clock's default start (also the fault tests' origin of time)."""


class ManualClock:
    """A wall clock that tests move by hand, forwards or backwards."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
