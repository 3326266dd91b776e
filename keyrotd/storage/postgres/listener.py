"""``LISTEN`` on the table's channel in a thread of its own, reconnecting after any failure.

Every write of :class:`~keyrotd.storage.postgres.backend.PostgresStorage` sends
``pg_notify(table, "<keyset> <sender>")`` in its transaction; the listener hands each payload to
``heard`` as it arrives (within milliseconds of the commit), so a daemon syncs that keyset at
once instead of at its next ``refresh_interval``. A notification sent while the listener was
disconnected is lost: after each (re)connection ``reconnected()`` is called, and the daemon
reads every keyset. The connection is separate from the pool (it stays in ``LISTEN`` for good),
in autocommit mode, and is probed with an empty query when idle, so a server that went away
silently is noticed within :data:`PROBE_EVERY` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import psycopg
from psycopg import sql

__all__ = ["Listener"]

WAIT: Final = 0.5
"""Seconds one wait for notifications lasts: how soon ``stop`` is noticed."""
PROBE_EVERY: Final = 10.0
RETRY_FIRST: Final = 0.5
RETRY_MOST: Final = 2.0

log = logging.getLogger("keyrotd.storage")


class Listener:
    """One thread, one connection, ``LISTEN`` on ``channel`` (see the module docstring)."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        heard: Callable[[str], None],
        reconnected: Callable[[], None],
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._heard = heard
        self._reconnected = reconnected
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyrotd-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2 * WAIT + 1)

    def _run(self) -> None:
        delay = RETRY_FIRST
        failing = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    log.info(
                        "listening for storage changes%s",
                        " again" if failing else "",
                        extra={"event": "storage.listening"},
                    )
                    failing, delay = False, RETRY_FIRST
                    self._tell(None)
                    self._listen(conn)
            except psycopg.Error as error:
                if not failing and not self._stop.is_set():
                    log.warning(
                        "not listening for storage changes (%s); retrying, and reading storage "
                        "every refresh_interval meanwhile",
                        type(error).__name__,
                        extra={"event": "storage.listen_failed"},
                    )
                failing = True
            if self._stop.wait(delay):
                return
            delay = min(RETRY_MOST, delay * 2)

    def _listen(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        probed = time.monotonic()
        while not self._stop.is_set():
            for notify in conn.notifies(timeout=WAIT):
                self._tell(notify.payload)
            if time.monotonic() - probed > PROBE_EVERY:
                conn.execute("")
                probed = time.monotonic()

    def _tell(self, payload: str | None) -> None:
        """Pass a change on; a failing callback (a daemon stopping) never ends the thread."""
        try:
            if payload is None:
                self._reconnected()
            else:
                self._heard(payload)
        except Exception:  # the listener outlives its callbacks' failures
            log.debug(
                "a storage change callback failed",
                exc_info=True,
                extra={"event": "storage.notify_failed"},
            )
