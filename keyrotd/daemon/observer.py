"""The ``observe`` poller (docs/guarantees.md): look at the JWKS the way verifiers get it.

Every ``refresh_interval`` one thread of its own starts a GET of every keyset's observed URLs at
once (plain GET, no cache-busting; bounded size and redirects, a hard deadline on each whole
fetch), hands each keyset's answers to the planner (``lifecycle.commands.Observed``, through the
``confirm`` callable the scheduler hands it: the keyset's runner, compare-and-swap), and reports:

- ``key.activation_held`` once per hold of a successor past its scheduled time, again when the
  URLs lacking it change; the gauge ``keyrotd_activation_held{keyset}``;
- ``key.revocation_seen`` per URL once it stops serving a revoked kid, with the delay;
- ``keyrotd_observe_errors_total{keyset,url}`` and one log line per failed answer.

Serving never waits on any of it: the HTTP side only reads the board. Each fetch runs in a
thread of its own (no shared pool a slow URL could fill), and a URL is never fetched twice at
once: keysets observing the same URL, or a poll that finds the last fetch of it still running,
share that fetch (:class:`Fetches`). A slow URL costs its own keysets a failed answer, and the
others nothing (tests/daemon/test_observe_slow.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, wait
from datetime import datetime, timedelta
from typing import Final

from prometheus_client import Counter, Histogram
from prometheus_client.registry import CollectorRegistry

from keyrotd.daemon.metrics import HeldGauge, public_url
from keyrotd.daemon.observe_fetch import ObserveError, fetch
from keyrotd.daemon.state import Board
from keyrotd.lifecycle.commands import Observed
from keyrotd.model import Keyset, KeyState
from keyrotd.observations import Answer, Poll
from keyrotd.propagation import confirmation_delay, held
from keyrotd.times import rfc3339
from keyrotd.writer_outcomes import Outcome

log = logging.getLogger("keyrotd.daemon")

LONGEST_WAIT: Final = 5.0
"""Seconds one fetch may take at most, all in (less with a shorter ``refresh_interval``)."""
GRACE: Final = 1.0
"""Seconds a poll waits past the fetch deadline (a name lookup no socket deadline interrupts)."""
STOP_WAIT: Final = 2.0
"""Longest wait at shutdown for a poll to finish its write (the daemon's stop allows 4 s)."""
DELAY_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class Fetches:
    """The fetches running, one per URL, each in a thread of its own (see the module
    docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Future[Answer]] = {}

    def start(self, url: str, timeout: float) -> Future[Answer]:
        """The fetch of ``url`` under way, else a new one (``timeout``: its deadline)."""
        with self._lock:
            running = self._running.get(url)
            if running is not None and not running.done():
                return running
            future: Future[Answer] = Future()
            future.set_running_or_notify_cancel()
            self._running[url] = future
        thread = threading.Thread(
            target=self._run, args=(url, timeout, future), name="keyrotd-observe", daemon=True
        )
        thread.start()
        return future

    def _run(self, url: str, timeout: float, future: Future[Answer]) -> None:
        try:
            future.set_result(fetch(url, timeout))
        except BaseException as exc:
            future.set_exception(exc)
        finally:
            with self._lock:
                if self._running.get(url) is future:
                    del self._running[url]


class Observer:
    """The poller thread of one daemon (see the module docstring)."""

    def __init__(
        self,
        confirm: Callable[[str, Observed], Outcome],
        observed: Callable[[], Mapping[str, tuple[str, ...]]],
        interval: Callable[[], timedelta],
        board: Board,
        registry: CollectorRegistry,
        clock: Callable[[], datetime],
    ) -> None:
        """``confirm(keyset, Observed(poll))`` writes what a poll saw (the scheduler's command);
        ``observed()`` is each configured keyset's ``observe`` URLs; ``interval()`` the current
        ``refresh_interval``, the pace of the polls (a reload may change it)."""
        self.confirm = confirm
        self.observed = observed
        self.interval = interval
        self.board = board
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fetches = Fetches()
        self._started = clock()
        self._holds: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._revocations: dict[str, dict[tuple[str, str], bool]] = {}
        """Per keyset, (kid, url) -> True while the URL still serves the revoked kid, False once
        it was reported gone (or was gone before this daemon looked)."""
        self.errors = Counter(
            "keyrotd_observe_errors",
            "Observed URLs that failed to answer with a JWKS",
            ["keyset", "url"],
            registry=registry,
        )
        self.propagation = Histogram(
            "keyrotd_propagation_seconds",
            "Seconds from a successor's publication until every observed URL served it",
            ["keyset"],
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        self.revocation = Histogram(
            "keyrotd_revocation_propagation_seconds",
            "Seconds from a revocation until an observed URL stopped serving the kid",
            ["keyset"],
            buckets=DELAY_BUCKETS,
            registry=registry,
        )
        registry.register(HeldGauge(lambda: board.snapshot, clock))

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="keyrotd-observer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; let a confirmation being written finish (bounded: see STOP_WAIT)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval().total_seconds()):
            self.poll_all()

    # -- one poll -----------------------------------------------------------------------------
    def poll_all(self) -> None:
        """Start the fetches of every keyset at once, then take each keyset's answers."""
        due: dict[str, tuple[Keyset, tuple[str, ...]]] = {}
        for name, configured in self.observed().items():
            watched = self._watched(name, configured)
            if watched is not None:
                due[name] = watched
        timeout = self._timeout()
        fetches = {
            url: self._fetches.start(url, timeout) for _, urls in due.values() for url in urls
        }
        deadline = time.monotonic() + timeout + GRACE  # one for all: they run at once
        for name, (stored, urls) in due.items():
            if self._stop.is_set():
                return
            try:
                answers = self._answers(name, {url: fetches[url] for url in urls}, deadline)
                self._take(name, stored, answers)
            except Exception as exc:  # one keyset's problem stops neither the others nor us
                log.error(
                    "keyset %s: observing failed",
                    name,
                    extra={
                        "event": "observe.poll_failed",
                        "keyset": name,
                        "error": str(exc) or type(exc).__name__,
                    },
                )

    def _watched(
        self, name: str, configured: tuple[str, ...]
    ) -> tuple[Keyset, tuple[str, ...]] | None:
        """The keyset as served and the URLs to look at, if there are any."""
        published = self.board.snapshot.published.get(name)
        if published is None:
            return None
        stored = published.stored
        awaited = [u.url for k in stored.pending if k.propagation for u in k.propagation.urls]
        urls = tuple(dict.fromkeys((*configured, *awaited)))  # the document's URLs count too
        return (stored, urls) if urls else None

    def _timeout(self) -> float:
        return min(LONGEST_WAIT, max(0.5, self.interval().total_seconds()))

    def _take(self, name: str, stored: Keyset, answers: Mapping[str, Answer]) -> None:
        poll = Poll(self.clock(), answers, self.interval())  # all received by now
        keyset = stored
        if any(k.awaiting for k in stored.pending) and not self._stop.is_set():
            outcome = self.confirm(name, Observed(poll))
            keyset = outcome.keyset
            for transition in outcome.transitions:
                key = keyset.find(transition.kid)
                delay = confirmation_delay(key) if key else None
                if transition.event == "key.confirmed" and delay is not None:
                    self.propagation.labels(name).observe(delay.total_seconds())
        self._report_hold(name, keyset, poll.at)
        self._watch_revocations(name, keyset, poll)

    def _answers(
        self, name: str, futures: Mapping[str, Future[Answer]], deadline: float
    ) -> Mapping[str, Answer]:
        wait(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        answers: dict[str, Answer] = {}
        for url, future in futures.items():
            try:
                answers[url] = future.result(timeout=0)
            except Exception as exc:
                reason = str(exc) if isinstance(exc, ObserveError) else "no answer in time"
                shown = public_url(url)  # a signed URL's query is a credential
                self.errors.labels(name, shown).inc()
                log.warning(
                    "keyset %s: observed URL %s: %s",
                    name,
                    shown,
                    reason,
                    extra={
                        "event": "observe.failed",
                        "keyset": name,
                        "url": shown,
                        "error": reason,
                    },
                )
                answers[url] = Answer(None)
        return answers

    def _report_hold(self, name: str, keyset: Keyset, now: datetime) -> None:
        holding = [k for k in keyset.pending if held(k, now)]
        if not holding:
            self._holds.pop(name, None)
            return
        key = holding[0]
        assert key.propagation is not None
        lacking = key.propagation.lacking
        if self._holds.get(name) == (key.kid, lacking):
            return
        self._holds[name] = (key.kid, lacking)
        shown = [public_url(url) for url in lacking]
        reason = "awaiting " + ", ".join(shown) if lacking else "confirmed, activating at "
        if not lacking and key.activates_at is not None:
            reason += rfc3339(key.activates_at)
        log.warning(
            "key.activation_held %s kid=%s: the active key keeps signing (%s)",
            name,
            key.kid,
            reason,
            extra={
                "event": "key.activation_held",
                "keyset": name,
                "kid": key.kid,
                "urls": shown,
            },
        )

    def _watch_revocations(self, name: str, keyset: Keyset, poll: Poll) -> None:
        watched = self._revocations.setdefault(name, {})
        for entry in keyset.history:
            if entry.state is not KeyState.REVOKED or entry.revoked_at is None:
                continue
            for url, answer in poll.answers.items():
                state = watched.get((entry.kid, url))
                if state is False or answer.kids is None:
                    continue
                if entry.kid in answer.kids:
                    watched[(entry.kid, url)] = True
                    continue
                watched[(entry.kid, url)] = False
                if state is None and entry.revoked_at < self._started:
                    continue  # gone before this daemon looked: its delay is unknown
                delay = max(0.0, (poll.at - entry.revoked_at).total_seconds())
                self.revocation.labels(name).observe(delay)
                log.info(
                    "key.revocation_seen %s kid=%s gone from %s after %.1fs",
                    name,
                    entry.kid,
                    public_url(url),
                    delay,
                    extra={
                        "event": "key.revocation_seen",
                        "keyset": name,
                        "kid": entry.kid,
                        "url": public_url(url),
                        "delay": round(delay, 3),
                    },
                )
