"""Noticing wall-clock jumps, which APScheduler 3 does not.

APScheduler computes every run time on the wall clock. After the clock goes back by an hour, the
refresh job's next run is an hour away: the daemon would stop re-reading storage (another host's
``keyrotd rotate`` or ``revoke``) for that hour. :class:`ClockWatch` compares the wall clock with
the monotonic clock from a thread that sleeps on the monotonic clock, and reports a jump so the
jobs can be scheduled again from the new wall time.

A forward jump cannot be undone that way: keyrotd's schedule is in wall-clock time, shared with
issuers and other replicas. It is logged, and the manager postpones what fell due within the jump
by its size (``times.forward_jump``, ``lifecycle.Postpone``), so G2 and G3 hold in elapsed time;
until then the served view stays at the elapsed time (``state.Board.current``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from keyrotd.times import CLOCK_JUMP

CHECK_EVERY: Final = 1.0
"""Seconds (monotonic) between two comparisons of the clocks."""
JUMP: Final = CLOCK_JUMP.total_seconds()
"""A difference between the clocks' progress above this many seconds is a jump, either way."""


class ClockWatch:
    def __init__(
        self,
        on_jump: Callable[[float], None],
        every: float = CHECK_EVERY,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_jump = on_jump
        self._every = every
        self._wall = wall
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="keyrotd-clock", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        wall, mono = self._wall(), self._monotonic()
        while not self._stop.wait(self._every):
            now_wall, now_mono = self._wall(), self._monotonic()
            jump = (now_wall - wall) - (now_mono - mono)
            wall, mono = now_wall, now_mono
            if abs(jump) > JUMP:
                self._on_jump(jump)
