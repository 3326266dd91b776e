"""One keyset in the daemon: read, apply what is due, publish to the board, keep a spare key.

Every storage access of a keyset goes through its :class:`KeysetRunner`, under one lock, so the
scheduled transitions, the periodic refresh and the admin commands of one keyset never race each
other inside this process (other processes are handled by the manager's compare-and-swap).

Key generation stays off the HTTP path: it runs in the scheduler's threads and, at start-up, in
the loading pool (``cryptography`` releases the GIL while it searches for primes). To keep the
scheduled activation write of an RSA keyset fast even when it must publish a successor at the
same instant (``publish_ahead == rotation_period``), a runner prepares one spare RSA key shortly
before a new key is due (:data:`SPARE_LEAD`); the key factory hands it out, or generates one on
the spot when there is none (always, for EC and Ed25519 keys: they take microseconds).

Each runner keeps its keyset's :class:`~keyrotd.daemon.journal.Journal` (every transition it
sees, logged once, by itself or found in storage) and its failure lines
(:class:`~keyrotd.daemon.journal.Failures`). A keyset that a reload no longer configures keeps
its runner, :attr:`KeysetRunner.unconfigured`: it only reads, so its JWKS stays served (the view
still lets keys leave at their times) and nothing is created or activated for it.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Final

from keyrotd.config import KeysetSettings
from keyrotd.custody.interface import Custody, CustodyProvider
from keyrotd.daemon.journal import FailureEvent, Failures, Journal
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.state import Board
from keyrotd.errors import (
    ConfigError,
    KeyNotFoundError,
    KeyrotdError,
    RefusedError,
    StorageError,
)
from keyrotd.keys import NewKey, generate_key
from keyrotd.lifecycle.commands import Command
from keyrotd.lifecycle.due import next_key_needed_at
from keyrotd.model import Keyset
from keyrotd.storage import Storage, Versioned
from keyrotd.times import Clock, utc_now
from keyrotd.writer import KeysetSpec, KeysetWriter, Outcome, SyncFailed

SPARE_LEAD: Final = timedelta(seconds=60)
"""How long before a new key is due the runner generates it."""


class KeysetRunner:
    def __init__(
        self,
        storage: Storage,
        settings: KeysetSettings,
        board: Board,
        metrics: Metrics,
        clock: Clock = utc_now,
        custody: CustodyProvider | None = None,
    ) -> None:
        """``custody`` opens the custody a keyset's ``custody`` setting names (not ``storage``).
        The rotator sets ``manager.reader_lag`` to the daemon's ``refresh_interval`` (how late
        it normally learns of others' writes), at start and on every reload."""
        self.board = board
        self._custody = custody
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._spare_lock = threading.Lock()
        self._spare: tuple[tuple[str, int], NewKey] | None = None
        self._preparing = False
        self.settings = settings
        self.unconfigured = False
        """A reload dropped the keyset: serve what storage holds, write nothing."""
        self.journal = Journal(settings.name)
        self.failures = Failures(settings.name)
        # time.monotonic lets the manager notice a forward wall-clock jump and postpone by it.
        spec = KeysetSpec.from_settings(settings)
        self.manager = KeysetWriter(
            storage,
            spec,
            clock,
            self._key,
            monotonic=time.monotonic,
            custody=self._custody_for(settings),
            on_transition=self.journal.own,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    def _custody_for(self, settings: KeysetSettings) -> Custody | None:
        if settings.custody == "storage":
            return None
        if self._custody is None:
            raise ConfigError(f"keyset {settings.name}: no {settings.custody} custody is open")
        return self._custody(settings.custody)

    @property
    def busy(self) -> bool:
        """A sync or a command is in progress."""
        return self._lock.locked()

    def reconfigure(self, settings: KeysetSettings) -> None:
        with self._lock:
            self.unconfigured = False
            self.settings = settings
            self.manager.spec = KeysetSpec.from_settings(settings)
            self.manager.custody = self._custody_for(settings)

    def unconfigure(self) -> None:
        """The configuration no longer lists the keyset: from now on, only read it."""
        with self._lock:
            self.unconfigured = True

    def sync(self) -> Keyset:
        """``manager.sync()`` and publish the result; failures are recorded, then raised (the
        cause itself: the scheduler reads ``temporary`` on it). Unconfigured: read only."""
        with self._lock:
            if self.unconfigured:
                return self._read()
            try:
                outcome = self.manager.sync()
            except SyncFailed as failed:
                if failed.read is not None:  # read, then failed to write: log what it read
                    self.journal.saw(failed.read)
                reason = self._failed(failed.stage, failed.cause)
                self._publish_failure(reason, failed.read)
                raise failed.cause from None
            self._worked(outcome.keyset)
            if outcome.written or not self.board.unchanged(self.name, outcome.keyset):
                self._published(outcome)
            else:  # served already (the board recomputes it by time): the read succeeded
                self.board.read_succeeded([self.name])
            return outcome.keyset

    def _read(self) -> Keyset:
        """Read the keyset and serve it as stored, writing nothing (an unconfigured keyset)."""
        try:
            loaded = self.manager.load()
            if loaded.version is None:
                raise StorageError(
                    f"the document of keyset {self.name} disappeared from {loaded.location}",
                    "restore it from a backup; the keyset is no longer configured",
                )
        except Exception as exc:
            self._publish_failure(self._failed("storage read", exc), None)
            raise
        self._worked(loaded.keyset)
        self.manager.adopt(loaded.keyset)
        if self.board.unchanged(self.name, loaded.keyset):
            self.board.read_succeeded([self.name])
        else:
            self.board.loaded(self.settings, loaded.keyset, self.clock())
        return loaded.keyset

    def _worked(self, stored: Keyset) -> None:
        """A read (or write) succeeded: log what others changed, and a recovery."""
        self.journal.saw(stored)
        self.failures.succeeded()

    def stale(self, read: Versioned | None) -> bool:
        """What the refresh read differs from what this runner last read or wrote, or the
        keyset is not served without error yet: it needs a sync."""
        version = None if read is None else read.version
        return version != self.manager.version or not self.board.served(self.name)

    def read_failed(self, error: KeyrotdError) -> None:
        """The refresh's read of this keyset failed: record it as a failed sync would."""
        with self._lock:
            self._publish_failure(self._failed("storage read", error), None)

    def command(self, command: Command) -> Outcome:
        """An admin command (rotate, revoke) applied now."""
        with self._lock:
            try:
                outcome = self.manager.apply(command)
            except (KeyNotFoundError, RefusedError):  # refused as asked: no failure
                raise
            except Exception as exc:
                self._publish_failure(self._failed("rotation", exc), None)
                raise
            self._worked(outcome.keyset)
            self._published(outcome)
            return outcome

    def _published(self, outcome: Outcome) -> None:
        for transition in outcome.transitions:
            self.metrics.transition(self.name, transition.event)
        self.board.loaded(self.settings, outcome.keyset, self.clock())

    def _publish_failure(self, reason: str, read: Keyset | None) -> None:
        """Serve what was read with the error beside it, else mark the keyset failed (the board
        keeps serving what it had)."""
        if read is None:
            self.board.failed(self.name, reason)
        else:
            self.board.loaded(self.settings, read, self.clock(), error=reason)

    def _failed(self, what: str, exc: Exception) -> str:
        """Count and log a failure (once a minute at most, ``journal.Failures``); the reason as
        a human line (never key material)."""
        reason = str(exc) if isinstance(exc, KeyrotdError) else type(exc).__name__
        if what == "rotation":
            self.metrics.rotation_failed(self.name)
        storage = isinstance(exc, StorageError | ConfigError | OSError)
        if storage:
            self.metrics.storage_failed(self.name)
        event: FailureEvent = (
            "storage.read_failed"
            if what == "storage read"
            else "storage.write_failed"
            if storage
            else "key.rotation_failed"
        )
        self.failures.failed(event, reason)
        return reason

    # -- keys -------------------------------------------------------------------------------
    def key_needed_at(self, keyset: Keyset) -> datetime:
        """When the planner will next need a fresh key (a successor becomes due)."""
        return next_key_needed_at(keyset, self.settings.policy) or self.clock()

    @property
    def needs_spare(self) -> bool:
        """RSA keys take up to seconds to generate; EC and Ed25519 keys well under a
        millisecond, not worth a scheduler job per keyset (10,000 of them at scale)."""
        # a key made in custody ahead of time would be an orphan at every restart: made when due
        return self.settings.custody == "storage" and self.settings.algorithm.startswith(
            ("RS", "PS")
        )

    def prepare_spare(self) -> None:
        """Generate the spare key in a background thread, unless one is ready or on its way."""
        with self._spare_lock:
            wanted = (self.settings.algorithm, self.settings.rsa_key_size)
            if self._preparing or (self._spare is not None and self._spare[0] == wanted):
                return
            self._preparing = True
        threading.Thread(target=self._generate_spare, args=(wanted,), daemon=True).start()

    def _generate_spare(self, wanted: tuple[str, int]) -> None:
        try:
            key = generate_key(*wanted)
        except Exception as exc:
            self.failures.failed("key.rotation_failed", f"key generation failed: {exc}")
            key = None
        with self._spare_lock:
            self._preparing = False
            if key is not None:
                self._spare = (wanted, key)

    def _key(self, algorithm: str, rsa_key_size: int) -> NewKey:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare[0] == (algorithm, rsa_key_size):
            return spare[1]
        return generate_key(algorithm, rsa_key_size)
