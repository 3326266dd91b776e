"""The one retry setting: how often and how far apart a temporary failure is tried again.

A :class:`Retry` is frozen: attempts, a first delay that doubles up to a cap, and a jitter (the
fraction of each delay drawn at random, so that writers that lost together do not retry
together). Only errors that say they are temporary (``KeyrotdError.temporary``, read through
:func:`keyrotd.errors.is_temporary`) are retried; a permanent one is reported at once.

Two instances, one per kind of wait:

- :data:`COMPARE_AND_SWAP`: the writer's loop after a lost compare-and-swap (another writer won):
  re-read and re-plan a few milliseconds later, up to 50 times.
- :data:`STORAGE`: the daemon's retry of a sync that failed on a temporary storage error
  (unreachable, throttled, a held lock): from half a second, doubling, never later than the next
  ``refresh_interval`` (which re-reads anyway). A permanent error is not retried: the next
  refresh meets it again, reports it once and counts it.

tenacity was considered and not used: neither caller is "call it again" (the writer re-plans
between attempts and generates keys without waiting; the daemon schedules a job instead of
sleeping in a scheduler thread), so it would only have computed the delay below.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Final


@dataclass(frozen=True)
class Retry:
    """``attempts`` tries in all; try ``n`` + 1 waits ``delay(n)`` after try ``n`` failed."""

    attempts: int
    base_delay: timedelta
    max_delay: timedelta
    jitter: float = 0.0
    """0: exactly the doubling delay; 1: anywhere between none and it ("full jitter")."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"invalid retry setting {self!r}")
        if self.base_delay < timedelta(0) or self.max_delay < self.base_delay:
            raise ValueError(f"invalid retry setting {self!r}")

    def delay(self, failures: int, draw: float | None = None) -> timedelta:
        """The wait after the ``failures``-th failure (1, 2, ...): ``base_delay * 2**(failures-1)``
        up to ``max_delay``, less a random part of at most ``jitter`` of it (``draw`` in [0, 1)
        replaces the random number, for tests)."""
        doubled: timedelta = self.base_delay * (2 ** min(max(failures - 1, 0), 32))
        capped = min(doubled, self.max_delay)
        if not self.jitter:
            return capped
        fraction = random.random() if draw is None else draw  # noqa: S311 (jitter, not crypto)
        jittered: timedelta = capped * (1.0 - self.jitter * fraction)
        return jittered

    def capped(self, max_delay: timedelta) -> Retry:
        """The same setting, never waiting longer than ``max_delay``."""
        if max_delay >= self.max_delay:
            return self
        return Retry(self.attempts, min(self.base_delay, max_delay), max_delay, self.jitter)


COMPARE_AND_SWAP: Final = Retry(
    attempts=50,
    base_delay=timedelta(milliseconds=2),
    max_delay=timedelta(milliseconds=100),
    jitter=1.0,
)
"""The writer's re-read and re-plan after a lost compare-and-swap."""

STORAGE: Final = Retry(
    attempts=17,
    base_delay=timedelta(milliseconds=500),
    max_delay=timedelta(hours=1),
    jitter=0.0,
)
"""The daemon's retry of a sync that met a temporary storage error (capped further at
``refresh_interval``; past ``attempts`` the refresh alone retries)."""

TOKEN_OPEN: Final = Retry(
    attempts=4,
    base_delay=timedelta(milliseconds=50),
    max_delay=timedelta(milliseconds=200),
    jitter=0.5,
)
"""A PKCS#11 token that cannot be opened, tried again with the library started anew: a module
shared by processes may answer "no token" while another one logs in (SoftHSM2 does)."""
