"""sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

The socket is a path or, starting with ``@``, an abstract socket. Outside systemd (no
``$NOTIFY_SOCKET``) every call does nothing. Failures are logged once and never stop the daemon.

Every send is non-blocking (``MSG_DONTWAIT``): a service manager that stops reading lets its
queue fill (``net.unix.max_dgram_qlen`` datagrams), and a blocking ``sendto`` would then stall
the event loop, which sends ``WATCHDOG=1`` and handles SIGTERM. A datagram that does not fit is
dropped and counted (``on_drop``, the metric ``keyrotd_notify_dropped_total``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

from keyrotd.daemon.state import Snapshot

log = logging.getLogger("keyrotd.daemon")


class Notifier:
    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._on_drop = on_drop
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address
        self._warned = False
        self.watchdog_interval = _watchdog_interval(environ)

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``READY=1``, ``STATUS=...``) in one datagram, never waiting."""
        if not self._address:
            return
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, socket.MSG_DONTWAIT, self._address)
        except BlockingIOError:  # the manager's queue is full: it is not reading
            self._on_drop()
            if not self._warned:
                self._warned = True
                log.warning(
                    "sd_notify: $NOTIFY_SOCKET is full (not read?); dropping messages",
                    extra={"event": "systemd.notify_failed"},
                )
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "sd_notify to $NOTIFY_SOCKET failed: %s",
                    exc.strerror or exc,
                    extra={"event": "systemd.notify_failed"},
                )

    def status(self, text: str) -> None:
        self.notify("STATUS=" + " ".join(text.split()))


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), if meant for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class Readiness:
    """``READY=1`` once the socket is bound and every keyset loaded; ``STATUS=`` on changes."""

    def __init__(self, notifier: Notifier, listen: str, snapshot: Callable[[], Snapshot]) -> None:
        self.notifier = notifier
        self.listen = listen
        self._board_snapshot = snapshot
        self._bound = False
        self._sent = False
        self._status = ""
        self._snapshot = Snapshot()
        self._lock = threading.Lock()

    def bound(self) -> None:
        with self._lock:
            self._bound = True
            self._update()

    def reloading(self) -> None:
        """``RELOADING=1`` (systemd >= 253), once the daemon has said it is ready."""
        with self._lock:
            if self._sent:
                usec = time.monotonic_ns() // 1000
                self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def reloaded(self) -> None:
        with self._lock:
            if self._sent:
                self.notifier.notify("READY=1", f"STATUS={self._status}")

    def board_changed(self) -> None:
        """Called by the board after a change, outside its lock: read its latest snapshot here,
        under this lock, so that a late call never installs an older one."""
        with self._lock:
            self._snapshot = self._board_snapshot()
            self._update()

    def _update(self) -> None:
        snap = self._snapshot
        if not self._bound:
            return
        if not self._sent:
            if snap.ready:
                self._sent = True
                self._status = f"serving {len(snap.order)} keysets"
                log.info("keyrotd ready on %s", self.listen, extra={"event": "daemon.ready"})
                self.notifier.notify("READY=1", f"STATUS={self._status}")
            return
        if snap.ready and not snap.degraded():
            status = f"serving {len(snap.order)} keysets"
        else:
            status = f"degraded ({len(snap.order)} keysets): " + "; ".join(snap.reasons())
        if status != self._status:
            self._status = status
            self.notifier.status(status)
