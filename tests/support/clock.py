"""The tests' one hand-moved clock, ``ManualClock``, and their origins of time.

Each test file counts its instants from one origin, imported as its ``T0``: ``T0`` itself, or
one of the named origins below (their values matter: recorded bodies and timestamps name them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 1, tzinfo=UTC)
"""The clock's default start (also the fault tests' and the CLI tests' origin of time)."""
T0_MARCH_MORNING = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""The origin of the writer and model tests (test_writer.py, test_model.py)."""
T0_MARCH_NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
"""The origin of the verification tests (test_inspect.py)."""
T0_DECEMBER = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
"""The origin of the schedule, storage, custody and Kubernetes tests (test_signing_key_format.py's
recorded bodies name 2026-12-02T12:00Z, a day after it)."""
T0_NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)
"""The origin of the planner tests (test_lifecycle.py)."""
T0_2030 = datetime(2030, 1, 1, tzinfo=UTC)
"""The origin of the daemon unit tests (tests/daemon/test_units.py): years past any real key."""


class ManualClock:
    """A wall clock that tests move by hand, forwards or backwards."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta
