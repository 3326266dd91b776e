"""APScheduler 3 drives every transition at its exact time.

Per keyset there is one date-trigger job, ``transition:<name>``, at the next due time the
planner reports (``lifecycle.due.next_transition``) of what was last read or written, delayed by
this replica's :func:`replica_offset`; it is replaced after every sync. The first load of every
keyset (and the syncs after a clock jump) run in a pool of their own, not as a job each. A
``refresh`` interval job reads every keyset each ``refresh_interval`` in one
``Storage.read_many`` (a ``stat`` per file; 20 secrets per AWS request) and starts a
``refresh:<name>`` job only for the keysets that changed (other replicas, the CLI), failed last
time or are overdue. ``spare:<name>`` prepares the next RSA key shortly before it is needed (see
``runner``).

APScheduler 3 drops a job that runs later than ``misfire_grace_time`` (one second by default)
after its time, silently: a busy machine would skip a rotation. Every job here has
``misfire_grace_time=None`` (run however late) and ``coalesce=True`` (once, not once per miss).

A keyset that a reload no longer lists keeps its runner, unconfigured (it only reads: see
``runner``), until the next restart: the refresh still reads it, no transition job is scheduled.

With ``keysets[].observe`` set, :class:`~keyrotd.daemon.observer.Observer` polls those URLs in a
thread of its own and confirms successors through :meth:`Rotator.command` (docs/guarantees.md).

Each keyset syncs in its own jobs, so a slow or failing keyset never stops the others. A read
of the refresh that failed is recorded as that keyset's failed sync, and tried again by the next
refresh. A sync
that failed on a temporary error (``KeyrotdError.temporary``: unreachable or throttled storage,
a held lock) is retried with the backoff of :data:`keyrotd.retries.STORAGE`, never later than
``refresh_interval``; a permanent one (permission denied, a tampered or corrupt document) is not
retried: the next refresh meets it again, so it is counted once per refresh (and logged when
it starts, then at most once a minute: ``journal.Failures``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Final

from apscheduler.executors.pool import ThreadPoolExecutor as JobExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from keyrotd.config import KeysetSettings
from keyrotd.custody.interface import CustodyProvider
from keyrotd.daemon.clock import ClockWatch
from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.observer import Observer
from keyrotd.daemon.runner import SPARE_LEAD, KeysetRunner
from keyrotd.daemon.state import Board
from keyrotd.errors import KeyrotdError, is_temporary
from keyrotd.lifecycle.commands import Command
from keyrotd.lifecycle.due import next_transition
from keyrotd.model import Keyset
from keyrotd.retries import STORAGE, Retry
from keyrotd.storage import Storage
from keyrotd.times import Clock, utc_now
from keyrotd.writer import Outcome

log = logging.getLogger("keyrotd.daemon")

OVERDUE_RETRY: Final = timedelta(milliseconds=20)
"""A transition that is still due right after a successful sync is retried this soon."""
REPLICA_SPREAD: Final = timedelta(seconds=5)
"""The longest delay of a replica's scheduled write (and a twentieth of ``rotation_period``)."""
LOADERS: Final = 2
"""Threads of the start-up load (and of the syncs after a clock jump): reads, parses, and the
key generation and writes of a bootstrap. Each is Python work that competes with the event
loop for the GIL: bootstrapping 10,000 keysets, one keyset's JWKS answered 30k req/s with one
loader, 23k with two, 14k with four (55-57k once ready), and two loaders were ready soonest."""
NEVER: Final = datetime.max.replace(tzinfo=UTC)


def replica_offset(replica: str, keyset: str, rotation_period: timedelta) -> timedelta:
    """How long ``replica`` waits after a keyset's transition is due before it writes it.

    Stable (a hash of the replica's name and the keyset's) and spread over [0, spread), where
    spread is :data:`REPLICA_SPREAD` or a twentieth of ``rotation_period``, whichever is less:
    the replica with the smallest offset writes, and the others, reading storage when their own
    time comes, find nothing left to do. A transition then costs about one write across the
    replicas instead of one attempt each (N-1 of them lost compare-and-swaps). What readers
    see does not wait: an activation or an expiry is applied by the view at its exact time.
    """
    spread = min(REPLICA_SPREAD, rotation_period / 20)
    digest = hashlib.sha256(f"{replica}\0{keyset}".encode()).digest()
    return spread * (int.from_bytes(digest[:8], "big") / 2**64)


class Rotator:
    """The runners of every keyset and the jobs that drive them."""

    def __init__(
        self,
        storage: Storage,
        board: Board,
        metrics: Metrics,
        refresh_interval: timedelta,
        clock: Clock = utc_now,
        retry: Retry = STORAGE,
        replica: str = "",
        custody: CustodyProvider | None = None,
    ) -> None:
        """``replica`` names this daemon among the replicas sharing the store (host and
        listening address): it sets the delay of its scheduled writes."""
        self.storage = storage
        self.custody = custody
        self.replica = replica
        self._due: dict[str, datetime] = {}
        self._queued: set[str] = set()
        """Keysets waiting in the loading pool: the refresh leaves them to it."""
        self._loading = ThreadPoolExecutor(LOADERS, thread_name_prefix="keyrotd-load")
        self.retry = retry
        self.board = board
        self.metrics = metrics
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.runners: dict[str, KeysetRunner] = {}
        self.unconfigured: dict[str, KeysetRunner] = {}
        """The keysets a reload dropped: served as stored until the restart."""
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._jobs_lock = threading.Lock()
        self._stopping = False
        self._clock_watch = ClockWatch(self._clock_jumped)
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": JobExecutor(8)},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 4},
        )
        self.observer = Observer(
            self.command,
            lambda: {name: r.settings.observe for name, r in list(self.runners.items())},
            lambda: self.refresh_interval,
            board,
            metrics.registry,
            clock,
        )

    # -- life --------------------------------------------------------------------------------
    def start(self, keysets: Iterable[KeysetSettings]) -> None:
        self.configure(tuple(keysets), self.refresh_interval)
        self._scheduler.start()
        self._clock_watch.start()
        self.observer.start()

    def shutdown(self) -> None:
        """Stop scheduling; wait for the jobs in progress (a write is never cut short).

        APScheduler 3 holds its job-store lock while it waits for the running jobs, and a job
        that adds a job then waits for that lock: a deadlock. So jobs stop adding jobs first.
        """
        self._clock_watch.stop()
        self.observer.stop()
        with self._jobs_lock:
            self._stopping = True
        self._loading.shutdown(wait=True, cancel_futures=True)  # the syncs not started: dropped
        self._scheduler.shutdown(wait=True)

    def wakes_at(self, name: str) -> datetime | None:
        """When the keyset's next transition job runs (None: none is scheduled)."""
        return self._due.get(name)

    @property
    def alive(self) -> bool:
        thread = getattr(self._scheduler, "_thread", None)
        return bool(self._scheduler.running and thread is not None and thread.is_alive())

    def configure(self, keysets: tuple[KeysetSettings, ...], refresh_interval: timedelta) -> None:
        """Start or reconfigure keysets to match ``keysets`` (start-up and SIGHUP); a keyset no
        longer listed stays served, unconfigured, until the restart."""
        with self._lock:
            wanted = {ks.name: ks for ks in keysets}
            for name in [n for n in self.runners if n not in wanted]:
                self._unconfigure(name)
            for name in [n for n in self.unconfigured if n in wanted]:
                self.runners[name] = self.unconfigured.pop(name)  # configured again
            self.board.arrange(tuple(wanted), kept=tuple(self.unconfigured))
            for name, settings in wanted.items():
                runner = self.runners.get(name)
                if runner is None:
                    self.metrics.watch(name)
                    self.runners[name] = KeysetRunner(
                        self.storage, settings, self.board, self.metrics, self.clock, self.custody
                    )
                elif runner.unconfigured or runner.settings != settings:
                    runner.reconfigure(settings)
                self.runners[name].manager.reader_lag = refresh_interval
                self._soon(name)
            self.refresh_interval = refresh_interval
            self._every_refresh_interval()

    def _unconfigure(self, name: str) -> None:
        """Keep serving a keyset the configuration dropped, reading it only, until the restart:
        a typo on reload never takes a JWKS down."""
        runner = self.runners.pop(name)
        runner.unconfigure()
        self.unconfigured[name] = runner
        self._due.pop(name, None)
        for job in (f"transition:{name}", f"spare:{name}"):
            self._remove(job)
        log.warning(
            "keyset %s: no longer configured; its JWKS stays served as stored until the next "
            "restart, and no key is created or activated for it",
            name,
            extra={"event": "keyset.unconfigured", "keyset": name},
        )

    def _every_refresh_interval(self) -> None:
        """(Re)start the refresh job's interval from now."""
        with self._jobs_lock:
            if not self._stopping:
                self._scheduler.add_job(
                    self.refresh,
                    IntervalTrigger(seconds=self.refresh_interval.total_seconds(), timezone=UTC),
                    id="refresh",
                    replace_existing=True,
                    max_instances=1,
                )

    def _clock_jumped(self, seconds: float) -> None:
        """Schedule again from the new wall time: refresh now and every refresh_interval."""
        log.warning(
            "the wall clock jumped %+.1fs; rescheduling from the new time%s",
            seconds,
            "" if seconds < 0 else " (what was due within the jump is due now)",
            extra={"event": "clock.jumped"},
        )
        self._every_refresh_interval()
        for name in list(self.runners):
            self._soon(name)

    # -- jobs --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read every keyset in one batched read (``Storage.read_many``: a ``stat`` per file,
        20 secrets per AWS request) and sync, each in its own job, only those that changed,
        failed last time or are overdue: the refresh of an unchanged store costs near nothing.
        A failed read is recorded as a failed sync (the next refresh tries again); a keyset
        whose sync is still running is skipped (that sync reads storage anyway)."""
        runners = [*self.runners.values(), *self.unconfigured.values()]
        results = self.storage.read_many([runner.name for runner in runners])
        now = self.clock()
        unchanged = []
        for runner in runners:
            if runner.busy or runner.name in self._queued:
                continue
            result = results[runner.name]
            if isinstance(result, KeyrotdError):
                runner.read_failed(result)
            elif runner.stale(result) or now >= self._due.get(runner.name, NEVER):
                self._at(f"refresh:{runner.name}", now, self._sync, runner.name)
            else:
                unchanged.append(runner.name)
        self.board.read_succeeded(unchanged)

    def changed(self, name: str | None) -> None:
        """Storage says ``name`` changed (``None``: anything may have): sync it now, as the
        refresh would (called from the backend's listening thread)."""
        now = self.clock()
        if name is None:
            self._at("refresh:*", now, lambda _name: self.refresh(), "")
        elif name in self.runners or name in self.unconfigured:
            self._at(f"refresh:{name}", now, self._sync, name)

    def _soon(self, name: str) -> None:
        """Sync a keyset now, in the start-up pool: the first load of 10,000 keysets is 10,000
        calls of one pool, not 10,000 scheduler jobs (each job costs the scheduler's lock)."""
        with self._jobs_lock:
            if self._stopping or name in self._queued:
                return
            self._queued.add(name)
            self._loading.submit(self._load, name)

    def _load(self, name: str) -> None:
        with self._jobs_lock:
            self._queued.discard(name)
        self._sync(name)

    def _transition(self, name: str) -> None:
        self._sync(name)

    def _sync(self, name: str) -> None:
        runner = self.runners.get(name) or self.unconfigured.get(name)
        if runner is None:
            return
        try:
            keyset = runner.sync()
        except Exception as error:  # recorded and logged by the runner
            self._retry(name, error)
            return
        self._schedule(runner, keyset)

    def resync(self, name: str) -> None:
        """Read the keyset again now, in the caller's thread (a custody key found gone)."""
        self._sync(name)

    def command(self, name: str, command: Command) -> Outcome:
        """Run an admin command now (called from the HTTP side, in a worker thread)."""
        runner = self.runners[name]
        outcome = runner.command(command)
        self._schedule(runner, outcome.keyset)
        return outcome

    def _schedule(self, runner: KeysetRunner, keyset: Keyset) -> None:
        self._failures.pop(runner.name, None)
        if runner.unconfigured:
            return  # read by the refresh; what is due is applied by the view, never written
        now = self.clock()
        upcoming = next_transition(keyset, runner.settings.policy)
        if upcoming is None:
            self._due.pop(runner.name, None)
        else:
            period = runner.settings.policy.rotation_period
            when = (
                upcoming + replica_offset(self.replica, runner.name, period)
                if upcoming > now
                else now + OVERDUE_RETRY
            )
            self._due[runner.name] = when  # the refresh syncs it from then on if the job is lost
            self._at(f"transition:{runner.name}", when, self._transition, runner.name)
        if runner.needs_spare:
            spare_at = max(now, runner.key_needed_at(keyset) - SPARE_LEAD)
            self._at(
                f"spare:{runner.name}", spare_at, lambda _name: runner.prepare_spare(), runner.name
            )

    def _retry(self, name: str, error: Exception) -> None:
        """A temporary failure is tried again after the backoff; a permanent one waits for the
        next refresh (no tight loop on a tampered document or a denied permission)."""
        if not is_temporary(error):
            self._failures.pop(name, None)
            return
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        if failures >= self.retry.attempts:
            return
        delay = self.retry.capped(self.refresh_interval).delay(failures)
        self._at(f"transition:{name}", self.clock() + delay, self._transition, name)

    def _at(self, job_id: str, when: datetime, func: Callable[[str], None], name: str) -> None:
        with self._jobs_lock:
            if self._stopping:
                return
            self._scheduler.add_job(
                func,
                DateTrigger(run_date=when, timezone=UTC),
                args=(name,),
                id=job_id,
                replace_existing=True,
            )

    def _remove(self, job_id: str) -> None:
        with self._jobs_lock:
            if not self._stopping and self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)
