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
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Final

from keyrotd.config import KeysetSettings
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
from keyrotd.keysets import KeysetManager, KeysetSpec, Outcome, SyncFailed
from keyrotd.lifecycle import Command, next_key_needed_at
from keyrotd.model import Keyset
from keyrotd.storage import Storage, Versioned
from keyrotd.times import Clock, utc_now

log = logging.getLogger("keyrotd.daemon")

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
    ) -> None:
        self.board = board
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._spare_lock = threading.Lock()
        self._spare: tuple[tuple[str, int], NewKey] | None = None
        self._preparing = False
        self.settings = settings
        # time.monotonic lets the manager notice a forward wall-clock jump and postpone by it.
        spec = KeysetSpec.from_settings(settings)
        self.manager = KeysetManager(storage, spec, clock, self._key, monotonic=time.monotonic)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def busy(self) -> bool:
        """A sync or a command is in progress."""
        return self._lock.locked()

    def reconfigure(self, settings: KeysetSettings) -> None:
        with self._lock:
            self.settings = settings
            self.manager.spec = KeysetSpec.from_settings(settings)

    def sync(self) -> Keyset:
        """``manager.sync()`` and publish the result; failures are recorded, then raised (the
        cause itself: the scheduler reads ``temporary`` on it)."""
        with self._lock:
            try:
                outcome = self.manager.sync()
            except SyncFailed as failed:
                reason = self._failed(failed.stage, failed.cause)
                self._publish_failure(reason, failed.read)
                raise failed.cause from None
            if outcome.written or not self.board.unchanged(self.name, outcome.keyset):
                self._published(outcome)
            else:  # served already (the board recomputes it by time): the read succeeded
                self.board.read_succeeded([self.name])
            return outcome.keyset

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
        """Count and log a failure; the reason as a human line (never key material)."""
        reason = str(exc) if isinstance(exc, KeyrotdError) else type(exc).__name__
        if what == "rotation":
            self.metrics.rotation_failed(self.name)
        if isinstance(exc, StorageError | ConfigError | OSError):
            self.metrics.storage_failed(self.name)
        # the reason goes in the ``error`` field only (the text format appends it)
        log.error(
            "keyset %s: %s failed", self.name, what, extra={"keyset": self.name, "error": reason}
        )
        return reason

    # -- keys -------------------------------------------------------------------------------
    def key_needed_at(self, keyset: Keyset) -> datetime:
        """When the planner will next need a fresh key (a successor becomes due)."""
        return next_key_needed_at(keyset, self.settings.policy) or self.clock()

    @property
    def needs_spare(self) -> bool:
        """RSA keys take up to seconds to generate; EC and Ed25519 keys well under a
        millisecond, not worth a scheduler job per keyset (10,000 of them at scale)."""
        return self.settings.algorithm.startswith(("RS", "PS"))

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
            log.error("keyset %s: key generation failed: %s", self.name, exc)
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
