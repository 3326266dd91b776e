"""The audit trail of the authenticated endpoints (docs/http.md).

Every request to an admin endpoint, allowed or not, is one ``admin.request`` event with
``client`` (the name, or ``unknown``), ``remote`` (``ip:port``, or ``unix`` on a unix socket,
which has no address), ``method``, ``keyset``, ``action`` and
``status`` (an int); a revoke also names the ``kid``, a rotate says whether ``now`` was
asked. Allowed requests (and 5xx failures) log at
info (error for 5xx), refusals (every 4xx) at warning.

Refusals are what a flood is made of: at most :data:`REFUSAL_LINES` of them are logged in any
:data:`WINDOW` seconds (a sliding window over the times of the lines logged); the others are
counted and logged as one ``admin.request.suppressed`` event with ``count``, by a timer on the
event loop :data:`FLUSH_AFTER` seconds after the first one left out, whether or not another
request comes. ``keyrotd_admin_requests_total{client,action,code}`` counts every request.

Nothing here sees the ``Authorization`` header: no token or hash can reach a line. The keyset and
kid come from the path: they are escaped (no control character can forge a line) and cut short.
Everything runs on the event loop's thread; the lines go to the daemon's stderr handler, as every
other log line does.
"""

from __future__ import annotations

import asyncio
import encodings.unicode_escape  # noqa: F401 (loaded now: ``shown`` must not import on a request)
import ipaddress
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from keyrotd.daemon.metrics import Metrics
from keyrotd.daemon.responses import Scope

log = logging.getLogger("keyrotd.daemon.audit")

REFUSAL_LINES: Final = 10
WINDOW: Final = 1.0
FLUSH_AFTER: Final = 1.0
"""Seconds from the first refusal left out to the ``admin.request.suppressed`` line (<= 2 s)."""
UNKNOWN: Final = "unknown"
_SHOWN: Final = 80
"""Longest keyset or kid text shown (a path may be anything)."""

Later = Callable[[float, Callable[[], None]], object]
"""Run a callback after some seconds (the event loop's ``call_later``)."""


@dataclass(frozen=True)
class Entry:
    """One admin request and its answer."""

    client: str
    remote: str
    method: str
    keyset: str
    action: str
    status: int
    kid: str | None = None
    now: bool | None = None
    """A rotate: whether ``now`` was asked (None: another action, or a query not understood)."""

    @property
    def refused(self) -> bool:
        return 400 <= self.status < 500


class RefusalLimit:
    """At most ``lines`` lines in any ``window`` seconds; ``now`` is passed in (monotonic)."""

    def __init__(self, lines: int = REFUSAL_LINES, window: float = WINDOW) -> None:
        self.window = window
        self._logged: deque[float] = deque(maxlen=lines)

    def admit(self, now: float) -> bool:
        """Whether a line at ``now`` keeps the limit (it is then counted as logged)."""
        full = len(self._logged) == self._logged.maxlen
        if full and now - self._logged[0] < self.window:
            return False
        self._logged.append(now)
        return True


class Audit:
    """Counts and logs every admin request (see the module docstring)."""

    def __init__(
        self,
        metrics: Metrics,
        clock: Callable[[], float],
        later: Later | None = None,
        limit: RefusalLimit | None = None,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self._later = later
        self.limit = limit or RefusalLimit()
        self.suppressed = 0
        self._flush_due = False

    def record(self, entry: Entry) -> None:
        self.metrics.admin_request(entry.client, entry.action, entry.status)
        if entry.refused and not self.limit.admit(self.clock()):
            self.suppressed += 1
            if not self._flush_due:
                self._flush_due = True
                (self._later or _call_later)(FLUSH_AFTER, self.flush)
            return
        level = logging.WARNING if entry.refused else logging.INFO
        if entry.status >= 500:
            level = logging.ERROR
        if not log.isEnabledFor(level):
            return
        kid = "" if entry.kid is None else f" kid={entry.kid}"
        if entry.now is not None:
            kid += f" now={'true' if entry.now else 'false'}"
        # log.log without its search of the caller's frame (no handler shows it): one line for
        # every answer of the signing API, so its cost counts (benchmarks/sign.py)
        record = log.makeRecord(
            log.name,
            level,
            __file__,
            0,
            "admin request: client=%s remote=%s %s %s keyset=%s%s status=%d",
            (
                entry.client,
                entry.remote,
                entry.method,
                entry.action,
                entry.keyset,
                kid,
                entry.status,
            ),
            None,
            extra={
                "event": "admin.request",
                "client": entry.client,
                "remote": entry.remote,
                "method": entry.method,
                "keyset": entry.keyset,
                "action": entry.action,
                "status": entry.status,
                "kid": entry.kid,
                "now": entry.now,
            },
        )
        log.handle(record)

    def flush(self) -> None:
        """Log the refusals left out since the last flush, if any (the timer's callback; also
        called at shutdown)."""
        self._flush_due = False
        count, self.suppressed = self.suppressed, 0
        if count:
            log.warning(
                "%d refused admin requests not logged (at most %d a second); "
                "keyrotd_admin_requests_total counts them",
                count,
                REFUSAL_LINES,
                extra={"event": "admin.request.suppressed", "count": count},
            )


def _call_later(delay: float, callback: Callable[[], None]) -> object:
    return asyncio.get_running_loop().call_later(delay, callback)


def remote_of(scope: Scope) -> str:
    """``ip:port`` of the peer, or ``unix`` for a unix socket (the scope's ``client`` is a tuple,
    ``("", 0)`` on a unix socket; a text is taken too: ``ip:port``, or a socket path)."""
    client = scope.get("client")
    if isinstance(client, tuple | list) and len(client) == 2:
        host, port = client
        if not host:  # a unix socket: ("", 0)
            return "unix"
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(client, str):
        host, colon, port = client.rpartition(":")
        try:
            ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            return "unix"
        return client if colon and port.isdigit() else "unix"
    return UNKNOWN


def shown(text: str) -> str:
    """Path text as it may appear in a line: control characters escaped, cut short."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= _SHOWN else escaped[:_SHOWN] + "..."
