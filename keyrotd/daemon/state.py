"""What the HTTP side serves, precomputed per keyset and swapped atomically.

A :class:`Published` is immutable: the stored document, its view at the time it was computed
(``lifecycle.view``), the JWKS body as bytes with its strong ETag, and two instants (epoch
seconds):

- ``recompute_at``: the next activation or expiry that ``view`` applies by itself. Once the
  clock passes it the body is recomputed, even before the scheduler's write lands;
- ``changes_at``: ``lifecycle.next_transition`` of the view, i.e. the next scheduled change of
  that JWKS (it also counts a successor becoming due, which only a write can publish). The
  ``Cache-Control`` max-age never reaches past it.

The :class:`Board` holds one ``Published`` and one :class:`Health` per keyset. Writers (the
scheduler threads) replace the whole mapping under a lock; readers (the event loop) read one
attribute, so they always see a consistent snapshot without taking the lock. The lock guards
memory only: the change hook (sd_notify's status) is called after it is released.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from keyrotd.config import KeysetSettings
from keyrotd.daemon.responses import compact_json, strong_etag
from keyrotd.lifecycle import next_transition, view
from keyrotd.model import Keyset, KeyState
from keyrotd.schedule import schedule_of, signing_key_body
from keyrotd.times import CLOCK_JUMP, forward_jump

NEVER: Final = math.inf


def _epoch(value: datetime | None) -> float:
    return NEVER if value is None else value.timestamp()


def _next_materialized(keyset: Keyset) -> datetime | None:
    """The next activation or expiry, the changes ``lifecycle.view`` applies without a write."""
    times = [
        k.activates_at if k.state is KeyState.PENDING else k.expires_at
        for k in keyset.keys
        if k.state in (KeyState.PENDING, KeyState.RETIRED)
    ]
    return min((t for t in times if t is not None), default=None)


@dataclass(frozen=True)
class Published:
    """One keyset as served at one instant (see the module docstring)."""

    settings: KeysetSettings
    stored: Keyset
    keyset: Keyset
    body: bytes
    etag: bytes
    recompute_at: float
    changes_at: float
    computed_wall: float
    """The wall time (epoch seconds) this view is of, and the monotonic time it was made at: a
    recompute compares them to notice a forward jump of the wall clock."""
    computed_mono: float

    @property
    def name(self) -> str:
        return self.settings.name

    @classmethod
    def compute(
        cls, settings: KeysetSettings, stored: Keyset, now: datetime, mono: float = 0.0
    ) -> Published:
        seen = view(stored, settings.policy, now)
        body = compact_json(seen.jwks())
        return cls(
            settings=settings,
            stored=stored,
            keyset=seen,
            body=body,
            etag=strong_etag(body),
            recompute_at=_epoch(_next_materialized(seen)),
            changes_at=_epoch(next_transition(seen, settings.policy)),
            computed_wall=now.timestamp(),
            computed_mono=mono,
        )

    def max_age(self, now: float, cap: int) -> int:
        """Seconds a client may cache the JWKS: within ``cap`` and before the next change."""
        return max(0, math.floor(min(cap, self.changes_at - now)))  # changes_at may be NEVER

    def signing_key(self) -> bytes:
        """The admin ``signing-key`` response: active private JWK, next one and its activation."""
        active = self.keyset.active
        if active is None or active.private_jwk is None:
            raise LookupError(f"keyset {self.name} has no active key")
        schedule = schedule_of(self.keyset, self.settings.policy, f"keyset {self.name}")
        return compact_json(signing_key_body(schedule))


@dataclass(frozen=True)
class Health:
    """Storage health of one keyset as seen by this daemon."""

    loaded: bool = False
    error: str | None = None
    last_success: float | None = None

    @property
    def ready(self) -> bool:
        return self.loaded and self.error is None


@dataclass(frozen=True)
class Snapshot:
    """Everything the HTTP side reads, replaced as a whole."""

    order: tuple[str, ...] = ()
    published: Mapping[str, Published] = dataclasses.field(default_factory=dict)
    health: Mapping[str, Health] = dataclasses.field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Every keyset has a JWKS to serve (a storage failure since does not change that)."""
        return all(name in self.published for name in self.order)

    def not_loaded(self) -> list[str]:
        """The keysets with no JWKS to serve yet."""
        return [name for name in self.order if name not in self.published]

    def degraded(self) -> list[str]:
        """The keysets whose last storage access failed (served from memory meanwhile)."""
        return [name for name in self.order if self.health.get(name, Health()).error is not None]

    def reasons(self) -> list[str]:
        """What is wrong, one line per keyset, with the error texts: for the systemd status
        (not public), never for HTTP."""
        reasons = []
        for name in self.order:
            health = self.health.get(name, Health())
            if name not in self.published:
                reasons.append(f"keyset {name}: not loaded yet")
            if health.error is not None:
                reasons.append(f"keyset {name}: storage failing: {health.error}")
        return reasons


class Board:
    """The shared, atomically replaced :class:`Snapshot` (see the module docstring)."""

    def __init__(
        self,
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot = Snapshot()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._on_change = on_change

    def current(self, name: str, now: float) -> Published | None:
        """The keyset as served at ``now`` (epoch seconds), recomputed if a transition passed."""
        published = self.snapshot.published.get(name)
        if published is None or now < published.recompute_at:
            return published
        # After a forward jump of the wall clock, what fell due within the jump is not due yet:
        # view the keyset at the time elapsed since the last view (less the margin, as the
        # manager postpones by jump + CLOCK_JUMP) until the manager has postponed the schedule
        # and a new view is loaded.
        mono = self._monotonic()
        jump = forward_jump(
            timedelta(seconds=now - published.computed_wall),
            timedelta(seconds=mono - published.computed_mono),
        )
        seen_at = datetime.fromtimestamp(now, UTC)
        if jump is not None:
            seen_at -= jump + CLOCK_JUMP
        fresh = Published.compute(published.settings, published.stored, seen_at, mono)
        with self._lock:
            if self.snapshot.published.get(name) is published:  # nobody stored a newer one
                self._replace(published={**self.snapshot.published, name: fresh})
        return fresh

    def loaded(
        self, settings: KeysetSettings, stored: Keyset, now: datetime, error: str | None = None
    ) -> Published:
        """Record a successful read (or write) of a keyset; ``error``: a write that failed."""
        published = Published.compute(settings, stored, now, self._monotonic())
        health = Health(loaded=True, error=error, last_success=time.time())
        with self._lock:
            snap = self.snapshot
            if settings.name not in snap.order:  # removed by a reload meanwhile
                return published
            self._replace(
                published={**snap.published, settings.name: published},
                health={**snap.health, settings.name: health},
            )
        self._on_change()
        return published

    def failed(self, name: str, error: str) -> None:
        """Record a failed read: the last loaded JWKS stays served."""
        with self._lock:
            snap = self.snapshot
            if name not in snap.order:
                return
            old = snap.health.get(name, Health())
            health = dataclasses.replace(old, error=error)
            self._replace(health={**snap.health, name: health})
        self._on_change()

    def arrange(self, order: tuple[str, ...]) -> None:
        """Set the served keysets (their order: the first one is ``/.well-known``)."""
        with self._lock:
            snap = self.snapshot
            self._replace(
                order=order,
                published={n: p for n, p in snap.published.items() if n in order},
                health={n: h for n, h in snap.health.items() if n in order},
            )
        self._on_change()

    def _replace(self, **changes: object) -> None:
        """Swap in a new snapshot (the caller holds the lock; nothing else happens here)."""
        self.snapshot = dataclasses.replace(self.snapshot, **changes)  # type: ignore[arg-type]
