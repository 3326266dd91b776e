"""The writer: read → plan → generate → compare-and-swap → re-plan; one ``sync()`` for the daemon.

This is the only place that writes keyset documents. On a lost compare-and-swap it re-reads and
re-plans after the backoff of :data:`keyrotd.retries.COMPARE_AND_SWAP` (G6); key generation never
happens while a storage lock is held (STYLE rule 2). Every other error goes to the caller, which
reads ``temporary`` on it (the daemon retries; the CLI reports).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from keyrotd.errors import ConflictError, StorageError
from keyrotd.keys import NewKey, generate_key
from keyrotd.lifecycle import TICK, Command, Postpone, Republish, plan, view
from keyrotd.model import Keyset, Policy, from_json, to_json
from keyrotd.outcomes import Loaded, Outcome, SyncFailed, log_transition
from keyrotd.retries import COMPARE_AND_SWAP, Retry
from keyrotd.storage.interface import Storage
from keyrotd.times import CLOCK_JUMP, Clock, rfc3339, utc_now

if TYPE_CHECKING:
    from keyrotd.config import KeysetSettings

__all__ = [
    "KeyFactory",
    "KeysetManager",
    "KeysetSpec",
    "Loaded",
    "Outcome",
    "SyncFailed",
    "log_transition",
]

log = logging.getLogger("keyrotd")

KeyFactory = Callable[[str, int], NewKey]

PUBLICATION_SLACK: Final = timedelta(seconds=1)
"""A write that returns later than this after the plan's ``now`` re-dates the keys it created."""


@dataclass(frozen=True)
class KeysetSpec:
    """What the manager needs to know of a keyset's configuration."""

    name: str
    algorithm: str
    rsa_key_size: int
    policy: Policy

    @classmethod
    def from_settings(cls, settings: KeysetSettings) -> KeysetSpec:
        return cls(settings.name, settings.algorithm, settings.rsa_key_size, settings.policy)


class KeysetManager:
    """Reads, plans and writes one keyset on one storage."""

    def __init__(
        self,
        storage: Storage,
        spec: KeysetSpec,
        clock: Clock = utc_now,
        key_factory: KeyFactory = generate_key,
        monotonic: Callable[[], float] | None = None,
        retry: Retry = COMPARE_AND_SWAP,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``monotonic`` (a long-lived daemon passes ``time.monotonic``) lets the manager notice a
        forward jump of the wall clock between two writes and postpone what fell due within it.
        ``retry`` paces the re-plans after lost compare-and-swaps; ``sleep`` waits them out."""
        self.storage = storage
        self.spec = spec
        self.clock = clock
        self.key_factory = key_factory
        self.monotonic = monotonic
        self.retry = retry
        self.sleep = sleep
        self._seen_document = False
        """A document was read or written: from then on, finding none is an error (``sync``)."""
        self._anchor: tuple[datetime, float] | None = None
        self._parsed: tuple[bytes, Keyset] | None = None
        """The last document read or written and its parsed form: the same bytes parse alike."""
        self._anchor_lock = threading.Lock()
        self.version: str | None = None
        """The version last read or written: the refresh compares it with a batched read."""

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self) -> Loaded:
        stored = self.storage.read(self.name)
        self.version = None if stored is None else stored.version
        if stored is None:
            return Loaded(Keyset(self.name), None, self.storage.location(self.name))
        self._seen_document = True
        parsed = self._parsed
        if parsed is not None and parsed[0] == stored.data:
            return Loaded(parsed[1], stored.version, stored.location)
        keyset = from_json(stored.data, stored.location)
        self._parsed = (stored.data, keyset)
        return Loaded(keyset, stored.version, stored.location)

    def view(self, now: datetime | None = None) -> Keyset:
        """The keyset as readers see it now (due transitions applied in memory, nothing written)."""
        return view(self.load().keyset, self.spec.policy, now or self.clock())

    def sync(self) -> Outcome:
        """The daemon's one call: read the keyset and, if anything is due, write it (``apply``
        with :data:`TICK`, planned on what was just read). Raises :class:`SyncFailed`.

        A document that was there before and is gone now is refused (a storage error), rather
        than started afresh with new keys."""
        try:
            loaded = self.load()
            if loaded.version is None and self._seen_document:
                raise StorageError(
                    f"the document of keyset {self.name} disappeared from "
                    f"{loaded.location}; refusing to start it afresh with new keys",
                    "restore it from a backup (or restart keyrotd to create a new keyset)",
                )
        except Exception as exc:
            raise SyncFailed("storage read", exc, None) from exc
        due = plan(loaded.keyset, self.spec.policy, self.clock())
        if not (due.changed or due.needs_keys):
            return Outcome(loaded.keyset, (), written=False, attempts=1)
        try:
            return self.apply(TICK, loaded)
        except Exception as exc:
            read = loaded.keyset if loaded.version is not None else None
            raise SyncFailed("rotation", exc, read) from exc

    def apply(self, command: Command = TICK, loaded: Loaded | None = None) -> Outcome:
        """Plan ``command`` against the stored keyset and write the result (compare-and-swap).

        A write that returns more than ``PUBLICATION_SLACK`` after the time it was planned with
        made its new keys visible only then: a second write re-dates them (G2 under slow storage).
        ``loaded``: what the caller has just read (planned on first, instead of a second read).
        """
        if self._postpone_after_a_clock_jump():
            loaded = None  # the postponement wrote a new version
        outcome, planned_at = self._apply(command, loaded)
        created = frozenset(t.kid for t in outcome.transitions if t.event == "key.created")
        published_at = self.clock()
        if created and published_at - planned_at > PUBLICATION_SLACK:
            redated, _ = self._apply(Republish(created))
            if redated.written:
                log.warning(
                    "keyset %s: the write took until %s; its new keys count as published then",
                    self.name,
                    rfc3339(published_at),
                    extra={"keyset": self.name},
                )
                return dataclasses.replace(outcome, keyset=redated.keyset)
        return outcome

    def _postpone_after_a_clock_jump(self) -> bool:
        """Compare the wall clock's progress with the monotonic clock's since the last call; a
        forward jump postpones the schedule by its size (``lifecycle.Postpone``). True: it did."""
        if self.monotonic is None:
            return False
        with self._anchor_lock:
            wall, mono = self.clock(), self.monotonic()
            anchor, self._anchor = self._anchor, (wall, mono)
        if anchor is None:
            return False
        jump = (wall - anchor[0]) - timedelta(seconds=mono - anchor[1])
        if jump <= CLOCK_JUMP:
            return False
        log.warning(
            "keyset %s: the wall clock jumped %.1fs ahead of the monotonic clock; postponing "
            "what fell due within the jump",
            self.name,
            jump.total_seconds(),
            extra={"event": "clock.jumped", "keyset": self.name},
        )
        try:
            # The two clocks are read a moment apart: postpone by a margin more, later is safe.
            self._apply(Postpone(jump + CLOCK_JUMP))
        except BaseException:
            with self._anchor_lock:
                self._anchor = anchor  # measure the jump again next time
            raise
        return True

    def _apply(self, command: Command, loaded: Loaded | None = None) -> tuple[Outcome, datetime]:
        """One read-plan-write loop, re-planned on every lost compare-and-swap."""
        fresh: tuple[NewKey, ...] = ()
        conflicts = 0
        for attempt in range(1, self.retry.attempts + 1):
            loaded = loaded or self.load()
            now = self.clock()
            result = plan(loaded.keyset, self.spec.policy, now, command, fresh)
            if result.needs_keys > len(fresh):
                fresh += self._generate(result.needs_keys - len(fresh))
                continue  # time passed while generating: plan again (the write checks the version)
            if not result.changed:
                return Outcome(result.keyset, (), written=False, attempts=attempt), now
            # G8: every write raises the document's revision (the storage refuses a lower one)
            keyset = dataclasses.replace(result.keyset, revision=loaded.keyset.revision + 1)
            data = to_json(keyset)
            try:
                self.version = self.storage.write(self.name, data, loaded.version)
            except ConflictError:
                log.debug("keyset %s: lost a compare-and-swap, re-planning", self.name)
                loaded = None
                conflicts += 1
                self.sleep(self.retry.delay(conflicts).total_seconds())
                continue
            self._parsed = (data, keyset)
            self._seen_document = True
            for transition in result.transitions:
                log_transition(self.name, transition)
            return Outcome(keyset, result.transitions, written=True, attempts=attempt), now
        raise self._gave_up()

    def _gave_up(self) -> StorageError:
        return StorageError(
            f"keyset {self.name}: gave up after {self.retry.attempts} conflicting writes",
            "another writer keeps changing it; check for a runaway process",
        )

    def _generate(self, count: int) -> tuple[NewKey, ...]:
        return tuple(
            self.key_factory(self.spec.algorithm, self.spec.rsa_key_size) for _ in range(count)
        )
