"""What the HTTP side serves, precomputed per keyset and swapped atomically.

A :class:`ServedKeyset` is immutable: the stored document, its view at the time it was computed
(``lifecycle.view``), the JWKS body as bytes with its strong ETag, and two instants (epoch
seconds):

- ``recompute_at``: the next activation or expiry that ``view`` applies by itself. Once the
  clock passes it the body is recomputed, even before the scheduler's write lands;
- ``changes_at``: ``lifecycle.due.next_transition`` of the view, i.e. the next scheduled change of
  that JWKS (it also counts a successor becoming due, which only a write can publish). The
  ``Cache-Control`` max-age never reaches past it.

The :class:`Board` holds one ``ServedKeyset`` and one :class:`Health` per keyset. Writers (the
scheduler threads) replace one keyset's entries under a lock; readers (the event loop) read one
entry, an immutable ``ServedKeyset``, so they always see one consistent view of a keyset without
taking the lock. The lock guards memory only: the change hook (sd_notify's status) is called
after it is released.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from keyrotd.config import KeysetSettings
from keyrotd.custody.interface import PrivateKeyUnavailableError
from keyrotd.daemon.responses import compact_json, strong_etag
from keyrotd.issuer_sources import Signer
from keyrotd.lifecycle.due import next_transition, next_view_change
from keyrotd.lifecycle.planner import view
from keyrotd.model import Keyset
from keyrotd.signing_key_format import signing_key_body, signing_keys_of
from keyrotd.times import CLOCK_JUMP, forward_jump

NEVER: Final = math.inf


def _epoch(value: datetime | None) -> float:
    return NEVER if value is None else value.timestamp()


@dataclass(frozen=True)
class ServedKeyset:
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
    ) -> ServedKeyset:
        seen = view(stored, settings.policy, now)
        body = compact_json(seen.jwks())
        return cls(
            settings=settings,
            stored=stored,
            keyset=seen,
            body=body,
            etag=strong_etag(body),
            recompute_at=_epoch(next_view_change(seen, settings.policy)),
            changes_at=_epoch(next_transition(seen, settings.policy)),
            computed_wall=now.timestamp(),
            computed_mono=mono,
        )

    def max_age(self, now: float, cap: int) -> int:
        """Seconds a client may cache the JWKS: within ``cap`` and before the next change."""
        return max(0, math.floor(min(cap, self.changes_at - now)))  # changes_at may be NEVER

    @functools.cached_property
    def signer(self) -> Signer:
        """The active key, imported once per view, for ``POST .../sign`` (LookupError: none)."""
        active = self.keyset.active
        if active is None or active.private_jwk is None:
            raise LookupError(f"keyset {self.name} has no active key")
        return Signer.of(active.private())

    def signing_key(self) -> bytes:
        """The admin ``signing-key`` response: active private JWK, next one and its activation."""
        custody = self.settings.custody
        if custody != "storage":
            raise PrivateKeyUnavailableError(self.name, custody)
        active = self.keyset.active
        if active is None or not active.holds_private:
            raise LookupError(f"keyset {self.name} has no active key")
        where = f"keyset {self.name}"
        schedule = signing_keys_of(self.keyset, self.settings.policy, where, self.settings.issuer)
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


class Snapshot:
    """Everything the HTTP side reads. The :class:`Board` changes it under its lock, one keyset
    at a time (an assignment of a dictionary entry, atomic for readers), and keeps the sets of
    the keysets not loaded and failing, so that "ready?" costs the same at 10,000 keysets as at
    one: copying the whole mapping for each of 10,000 keysets made loading them quadratic."""

    def __init__(self) -> None:
        self.order: tuple[str, ...] = ()
        self.published: dict[str, ServedKeyset] = {}
        self.health: dict[str, Health] = {}
        self._members: frozenset[str] = frozenset()
        """The keysets served: the configured ones (``order``) and those kept after a reload."""
        self._configured: frozenset[str] = frozenset()
        self._missing: set[str] = set()
        self._failing: set[str] = set()

    @property
    def ready(self) -> bool:
        """Every keyset has a JWKS to serve (a storage failure since does not change that)."""
        return not self._missing

    def not_loaded(self) -> list[str]:
        """The keysets with no JWKS to serve yet."""
        return self._in_order(self._missing)

    def degraded(self) -> list[str]:
        """The keysets whose last storage access failed (served from memory meanwhile)."""
        return self._in_order(self._failing)

    def reasons(self, most: int = 5) -> list[str]:
        """What is wrong, one line per keyset (the first ``most``, then a count), with the error
        texts: for the systemd status (not public), never for HTTP."""
        reasons = [f"keyset {name}: not loaded yet" for name in self._first(self._missing, most)]
        for name in self._first(self._failing, most):
            reasons.append(f"keyset {name}: storage failing: {self.health[name].error}")
        more = len(self._missing) + len(self._failing) - len(reasons)
        return reasons + ([f"{more} more"] if more > 0 else [])

    def _in_order(self, names: set[str]) -> list[str]:
        if not names:
            return []
        return [name for name in self.order if name in names]

    def _first(self, names: set[str], most: int) -> list[str]:
        if len(names) <= most:
            return self._in_order(names)
        position = {name: index for index, name in enumerate(self.order)}
        return sorted(names, key=position.__getitem__)[:most]

    # -- changed by the Board only, under its lock --------------------------------------------
    def _arrange(self, order: tuple[str, ...], kept: tuple[str, ...]) -> None:
        members = frozenset(order) | frozenset(kept)
        for gone in self._members - members:
            self.published.pop(gone, None)
            self.health.pop(gone, None)
        self._configured = frozenset(order)
        self._failing &= self._configured
        self._missing = {name for name in order if name not in self.published}
        self._members, self.order = members, order

    def _set(self, name: str, published: ServedKeyset | None, health: Health | None) -> bool:
        """Store one keyset's view and health; False if it is no longer served."""
        if name not in self._members:
            return False
        if published is not None:
            self.published[name] = published
            self._missing.discard(name)
        if health is not None:
            self.health[name] = health
            if health.error is None:
                self._failing.discard(name)
            elif name in self._configured:  # a kept keyset is not part of readiness
                self._failing.add(name)
        return True


class Board:
    """The shared :class:`Snapshot` (see the module docstring)."""

    def __init__(
        self,
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.snapshot = Snapshot()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._on_change = on_change

    def current(self, name: str, now: float) -> ServedKeyset | None:
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
        fresh = ServedKeyset.compute(published.settings, published.stored, seen_at, mono)
        with self._lock:
            if self.snapshot.published.get(name) is published:  # nobody stored a newer one
                self.snapshot._set(name, fresh, None)
        return fresh

    def unchanged(self, name: str, stored: Keyset) -> bool:
        """``stored`` is what is served already, without an error: nothing to publish."""
        published = self.snapshot.published.get(name)  # a reload may remove it meanwhile
        return published is not None and published.stored is stored and self.served(name)

    def read_succeeded(self, names: list[str]) -> None:
        """Storage answered for ``names`` and nothing changed: record when (the last successful
        read is a metric operators alert on), publishing nothing."""
        now = time.time()
        with self._lock:
            health = self.snapshot.health
            for name in names:
                old = health.get(name)
                if old is not None and old.loaded and old.error is None:
                    health[name] = dataclasses.replace(old, last_success=now)

    def served(self, name: str) -> bool:
        """The keyset has a JWKS and its last storage access succeeded."""
        health = self.snapshot.health.get(name)
        return name in self.snapshot.published and health is not None and health.error is None

    def loaded(
        self, settings: KeysetSettings, stored: Keyset, now: datetime, error: str | None = None
    ) -> ServedKeyset:
        """Record a successful read (or write) of a keyset; ``error``: a write that failed."""
        published = ServedKeyset.compute(settings, stored, now, self._monotonic())
        health = Health(loaded=True, error=error, last_success=time.time())
        with self._lock:
            if not self.snapshot._set(settings.name, published, health):
                return published  # removed by a reload meanwhile
        self._on_change()
        return published

    def failed(self, name: str, error: str) -> None:
        """Record a failed read: the last loaded JWKS stays served."""
        with self._lock:
            old = self.snapshot.health.get(name, Health())
            if old.error == error:
                return  # the same failure again: nothing changed
            if not self.snapshot._set(name, None, dataclasses.replace(old, error=error)):
                return
        self._on_change()

    def arrange(self, order: tuple[str, ...], kept: tuple[str, ...] = ()) -> None:
        """Set the configured keysets (their order: the first one is ``/.well-known``) and the
        ``kept`` ones, no longer configured but still served until the restart (their JWKS
        only: ``order`` is what readiness, metrics and the admin endpoints know)."""
        with self._lock:
            self.snapshot._arrange(order, kept)
        self._on_change()
