"""The writer: read → plan → generate → compare-and-swap → re-plan; one ``sync()`` for the daemon.

This is the only place that writes keyset documents. On a lost compare-and-swap it re-reads and
re-plans after the backoff of :data:`keyrotd.retries.COMPARE_AND_SWAP` (G6); key generation never
happens while a storage lock is held (keys are made before the write). Every other error goes to
the caller, which reads ``temporary`` on it (the daemon retries; the CLI reports).
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

from keyrotd.custody.interface import ORPHAN_GRACE
from keyrotd.errors import ConflictError, KeyrotdError, StorageError
from keyrotd.keys import NewKey, generate_key
from keyrotd.lifecycle.commands import TICK, Command, Postpone, Republish, Retain, plan
from keyrotd.lifecycle.events import Transition
from keyrotd.lifecycle.planner import view
from keyrotd.model import Keyset, KeyState, Policy, from_json, to_json
from keyrotd.retries import COMPARE_AND_SWAP, Retry
from keyrotd.storage.interface import Storage
from keyrotd.times import CLOCK_JUMP, Clock, rfc3339, utc_now
from keyrotd.writer_outcomes import Loaded, Outcome, SyncFailed, log_transition

if TYPE_CHECKING:
    from keyrotd.config import KeysetSettings
    from keyrotd.custody.interface import Custody

__all__ = [
    "KeyFactory",
    "KeysetSpec",
    "KeysetWriter",
    "Loaded",
    "Outcome",
    "SyncFailed",
    "log_transition",
]

log = logging.getLogger("keyrotd")

KeyFactory = Callable[[str, int], NewKey]

SWEEP_INTERVAL: Final = timedelta(minutes=5)
"""How often a writer looks for orphan keys in custody (a listing of the token or of KMS)."""
PUBLICATION_SLACK: Final = timedelta(seconds=1)
"""A write that returns later than this after the plan's ``now`` re-dates the keys it created."""


@dataclass(frozen=True)
class KeysetSpec:
    """What the manager needs to know of a keyset's configuration."""

    name: str
    algorithm: str
    rsa_key_size: int
    policy: Policy
    custody: str = "storage"

    @classmethod
    def from_settings(cls, settings: KeysetSettings) -> KeysetSpec:
        return cls(
            settings.name,
            settings.algorithm,
            settings.rsa_key_size,
            settings.policy,
            settings.custody,
        )


class KeysetWriter:
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
        custody: Custody | None = None,
        on_transition: Callable[[str, Transition], None] = log_transition,
        reader_lag: timedelta | None = None,
    ) -> None:
        """``monotonic`` (a long-lived daemon passes ``time.monotonic``) lets the manager notice a
        forward jump of the wall clock between two writes and postpone what fell due within it.
        ``retry`` paces the re-plans after lost compare-and-swaps; ``sleep`` waits them out.
        ``custody``: where new keys are made and old ones destroyed, for a keyset whose custody
        is not ``storage`` (its keys are made there, not by ``key_factory``).
        ``on_transition`` is told each transition it wrote (the daemon's journal; else logged).
        ``reader_lag`` (a daemon passes its ``refresh_interval``): how late this process may
        normally learn of a change written elsewhere; learning later that the key it signed
        with was retired keeps that key in the JWKS longer (``sync``, ``lifecycle.Retain``)."""
        self.storage = storage
        self.spec = spec
        self.custody = custody
        self._swept_at: datetime | None = None
        self.clock = clock
        self.key_factory = key_factory
        self.monotonic = monotonic
        self.retry = retry
        self.sleep = sleep
        self.on_transition = on_transition
        self._seen_document = False
        """A document was read or written: from then on, finding none is an error (``sync``)."""
        self._anchor: tuple[datetime, float] | None = None
        self._parsed: tuple[bytes, Keyset] | None = None
        """The last document read or written and its parsed form: the same bytes parse alike."""
        self._anchor_lock = threading.Lock()
        self.version: str | None = None
        """The version last read or written: the refresh compares it with a batched read."""
        self.reader_lag = reader_lag
        self._adopted: Keyset | None = None
        """The document of the last ``sync`` or ``apply`` that succeeded: what this process has
        served (and signed with) since, as its view of that document at each instant."""

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
        now = self.clock()
        retain = self._signed_past_retirement(loaded.keyset, now)
        due = plan(loaded.keyset, self.spec.policy, now)
        if retain is None and not (due.changed or due.needs_keys):
            self.sweep_quietly(loaded.keyset)
            self._adopted = loaded.keyset
            return Outcome(loaded.keyset, (), written=False, attempts=1)
        try:
            return self.apply(retain or TICK, loaded)
        except Exception as exc:
            # With a key to retain, what was read must not be served: it drops that key.
            read = loaded.keyset if loaded.version is not None and retain is None else None
            if read is not None:
                self.adopt(read)  # the daemon serves it as read (``SyncFailed.read``)
            raise SyncFailed("rotation", exc, read) from exc

    def adopt(self, keyset: Keyset) -> None:
        """This process serves ``keyset`` from now on (read, not written: a failed write's read,
        an unconfigured keyset's): what it signs with is judged against it."""
        self._adopted = keyset

    def _signed_past_retirement(self, stored: Keyset, now: datetime) -> Retain | None:
        """The key this process signed with until ``now`` (the active key of its view of the
        document it last adopted), when ``stored`` retired it more than twice ``reader_lag`` ago
        and so lets it leave the JWKS sooner than ``token_lifetime + clock_skew`` from now (G3):
        this process could not read storage while the retirement was written. None otherwise,
        and always without ``reader_lag`` (a CLI) or a document adopted before."""
        adopted, lag = self._adopted, self.reader_lag
        if adopted is None or lag is None or adopted is stored:
            return None
        policy = self.spec.policy
        signed = view(adopted, policy, now).active
        if signed is None:
            return None
        seen = view(stored, policy, now)
        found = next((k for k in (*seen.keys, *seen.history) if k.kid == signed.kid), None)
        if found is None or found.state not in (KeyState.RETIRED, KeyState.EXPIRED):
            return None  # still signing, revoked (never kept), or not this document's key
        until = now + policy.retention
        if found.expires_at is not None and found.expires_at >= until - 2 * lag:
            return None  # learned within two refreshes: the lag every reader is allowed
        kept = signed.replace(state=KeyState.RETIRED, drop_private=True)
        stopped = rfc3339(found.retired_at) if found.retired_at else "an earlier time"
        log.warning(
            "keyset %s: key %s signed here until now, but storage says it stopped at %s; it "
            "stays in the JWKS until %s",
            self.name,
            signed.kid,
            stopped,
            rfc3339(until),
            extra={
                "event": "key.signed_late",
                "keyset": self.name,
                "kid": signed.kid,
                "at": rfc3339(now),
                "retired_at": stopped,
                "until": rfc3339(until),
            },
        )
        return Retain(kept, until)

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
                    extra={"event": "key.redated", "keyset": self.name},
                )
                outcome = dataclasses.replace(outcome, keyset=redated.keyset)
        self.sweep_quietly(outcome.keyset)
        self._adopted = outcome.keyset
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
        """One read-plan-write loop, re-planned on every lost compare-and-swap. Keys made in
        custody that the written document does not name are destroyed before it returns (and
        by a later sweep, should this process die first)."""
        fresh: list[NewKey] = []
        try:
            outcome, planned_at, before = self._plan_and_write(command, loaded, fresh)
        except BaseException:
            self._release(fresh, None, None)
            raise
        self._release(fresh, before, outcome.keyset if outcome.written else None)
        return outcome, planned_at

    def _plan_and_write(
        self, command: Command, loaded: Loaded | None, fresh: list[NewKey]
    ) -> tuple[Outcome, datetime, Keyset | None]:
        conflicts = 0
        for attempt in range(1, self.retry.attempts + 1):
            loaded = loaded or self.load()
            now = self.clock()
            result = plan(loaded.keyset, self.spec.policy, now, command, tuple(fresh))
            if result.needs_keys > len(fresh):
                fresh += self._generate(result.needs_keys - len(fresh))
                continue  # time passed while generating: plan again (the write checks the version)
            if not result.changed:
                return Outcome(result.keyset, (), written=False, attempts=attempt), now, None
            # G8: every write raises the document's revision (the storage refuses a lower one)
            keyset = dataclasses.replace(result.keyset, revision=loaded.keyset.revision + 1)
            data = to_json(keyset)
            try:
                self.version = self.storage.write(self.name, data, loaded.version)
            except ConflictError:
                log.debug(
                    "keyset %s: lost a compare-and-swap, re-planning",
                    self.name,
                    extra={"event": "storage.conflict", "keyset": self.name},
                )
                loaded = None
                conflicts += 1
                self.sleep(self.retry.delay(conflicts).total_seconds())
                continue
            self._parsed = (data, keyset)
            self._seen_document = True
            for transition in result.transitions:
                self.on_transition(self.name, transition)
            written = Outcome(keyset, result.transitions, written=True, attempts=attempt)
            return written, now, loaded.keyset
        raise self._gave_up()

    def _gave_up(self) -> StorageError:
        return StorageError(
            f"keyset {self.name}: gave up after {self.retry.attempts} conflicting writes",
            "another writer keeps changing it; check for a runaway process",
        )

    def _generate(self, count: int) -> list[NewKey]:
        if self.custody is None:
            return [
                self.key_factory(self.spec.algorithm, self.spec.rsa_key_size) for _ in range(count)
            ]
        made = []
        for _ in range(count):
            key = self.custody.create(
                self.name, self.spec.algorithm, self.spec.rsa_key_size, self.clock()
            )
            public = {k: v for k, v in key.public_jwk.items() if k not in ("kid", "alg", "use")}
            made.append(NewKey(key.kid, key.alg, public, None, handle=key.handle))
        return made

    # -- custody -----------------------------------------------------------------------------
    def _release(self, fresh: list[NewKey], before: Keyset | None, after: Keyset | None) -> None:
        """Destroy in custody what no document will name: the keys made for this command that
        the written document does not hold, and the private halves the write let go of
        (retired, expired, revoked keys). A failure is logged; the sweep tries again later."""
        if self.custody is None:
            return
        named = set() if after is None else _custody_held(after)
        doomed = [key.handle for key in fresh if key.handle and key.handle not in named]
        if before is not None and after is not None:
            doomed += sorted(_custody_held(before) - named)
        for handle in doomed:
            self._destroy(handle)

    def _destroy(self, handle: str) -> None:
        assert self.custody is not None
        try:
            self.custody.destroy(handle)
        except KeyrotdError as exc:
            log.warning(
                "keyset %s: could not destroy a key in %s custody yet: %s",
                self.name,
                self.custody.name,
                exc.message,
                extra={"event": "custody.destroy_failed", "keyset": self.name},
            )

    def sweep(self, keyset: Keyset, now: datetime, every: timedelta = SWEEP_INTERVAL) -> int:
        """Destroy the keys this keyset's custody holds that ``keyset`` (just read or written)
        does not hold privately and that are older than :data:`ORPHAN_GRACE`: those of lost
        compare-and-swaps and of writers killed between making a key and writing it. Objects
        keyrotd did not label are never listed, so never touched. At most once per ``every``;
        the number destroyed."""
        if self.custody is None:
            return 0
        if self._swept_at is not None and now - self._swept_at < every:
            return 0
        self._swept_at = now
        named = _custody_held(keyset)
        destroyed = 0
        for held in self.custody.held(self.name):
            if held.handle not in named and now - held.created_at > ORPHAN_GRACE:
                log.info(
                    "keyset %s: destroying orphan key %s in %s custody (no document names it)",
                    self.name,
                    held.kid or held.handle,
                    self.custody.name,
                    extra={"event": "custody.orphan_destroyed", "keyset": self.name},
                )
                self._destroy(held.handle)
                destroyed += 1
        return destroyed

    def sweep_quietly(self, keyset: Keyset) -> None:
        """:meth:`sweep`, its failure logged: a custody out of reach never fails a write."""
        if self.custody is None:
            return
        try:
            self.sweep(keyset, self.clock())
        except KeyrotdError as exc:
            log.warning(
                "keyset %s: could not look for orphan keys in %s custody: %s",
                self.name,
                self.custody.name,
                exc.message,
                extra={"event": "custody.sweep_failed", "keyset": self.name},
            )


def _custody_held(keyset: Keyset) -> set[str]:
    """The handles of the keys whose private half the document keeps in custody."""
    return {k.handle for k in keyset.keys if k.handle is not None and k.holds_private}
