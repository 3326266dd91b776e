"""Closing connections idle for longer than :data:`IDLE_TIMEOUT`, on every listener.

granian 2.8 has no idle timeout: in its ``auto`` mode a kept-alive or silent connection stayed
open for good, and its HTTP/1 ``header_read_timeout`` only starts with the first byte of a request
(docs/http.md, "Connections"). So the daemon looks at the connections itself, every
:data:`CHECK_EVERY` seconds, through the file descriptors of its own process
(``/proc/self/fd``): each is a socket granian accepted on one of the listeners.

- TCP (HTTP or HTTPS): the kernel keeps the time since the last data received and sent
  (``TCP_INFO``); a connection with neither for :data:`IDLE_TIMEOUT` is shut down, and granian then
  closes it as a client's close.
- The admin unix socket has no such times. A connection there is shut down once it has been open
  for :data:`IDLE_TIMEOUT` while the admin listener answered nothing for as long and has no request
  in progress: no connection there can have been active. A client that keeps another one busy
  keeps its idle neighbours open (local peers only).

Shutting a socket down through a duplicate of its descriptor reaches the one socket granian holds;
the duplicate is closed at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

IDLE_TIMEOUT: Final = 60.0
CHECK_EVERY: Final = 5.0
_LAST_DATA_SENT: Final = 44
"""Offsets in ``struct tcp_info`` (linux/tcp.h) of ``tcpi_last_data_sent`` and, 8 bytes on,
``tcpi_last_data_recv``: milliseconds."""
_LAST_DATA_RECV: Final = 52
_TCP_INFO_SIZE: Final = 104


@dataclass
class Activity:
    """When a listener last answered, and how many requests it has in progress (the app keeps
    it; the unix-socket rule reads it)."""

    last: float = field(default_factory=time.monotonic)
    in_progress: int = 0

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        self.in_progress += 1
        try:
            yield
        finally:
            self.in_progress -= 1
            self.last = time.monotonic()


class IdleCloser:
    """Finds this process's connections on ``ports`` (TCP) and ``paths`` (unix) and shuts down
    those idle for ``timeout`` seconds (see the module docstring); :meth:`check` is one pass."""

    def __init__(
        self,
        ports: set[int],
        paths: set[str],
        unix_activity: Activity | None = None,
        timeout: float = IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ports = ports
        self.paths = paths
        self.unix_activity = unix_activity or Activity()
        self.timeout = timeout
        self.clock = clock
        self._opened: dict[tuple[int, int], float] = {}
        """(fd, inode) of each unix connection -> when it was first seen."""

    def check(self) -> int:
        """One pass; the number of connections shut down."""
        now, closed, seen = self.clock(), 0, set()
        for fd, inode in _sockets():
            try:
                sock = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue  # gone meanwhile
            with sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    closed += self._check_tcp(sock)
                elif sock.family == socket.AF_UNIX and self._is_ours_unix(sock):
                    seen.add((fd, inode))
                    opened = self._opened.setdefault((fd, inode), now)
                    closed += self._check_unix(sock, now - opened, now)
        self._opened = {key: at for key, at in self._opened.items() if key in seen}
        return closed

    def _check_tcp(self, sock: socket.socket) -> int:
        try:
            if sock.type != socket.SOCK_STREAM or sock.getsockname()[1] not in self.ports:
                return 0
            sock.getpeername()  # a listening socket has none
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            return 0
        (sent,) = struct.unpack_from("=I", info, _LAST_DATA_SENT)
        (received,) = struct.unpack_from("=I", info, _LAST_DATA_RECV)
        if min(sent, received) < self.timeout * 1000:
            return 0
        return _shut(sock)

    def _is_ours_unix(self, sock: socket.socket) -> bool:
        try:
            name = sock.getsockname()
            sock.getpeername()
        except OSError:
            return False
        return isinstance(name, str) and name in self.paths

    def _check_unix(self, sock: socket.socket, open_for: float, now: float) -> int:
        activity = self.unix_activity
        quiet_for = now - activity.last
        if activity.in_progress or min(open_for, quiet_for) < self.timeout:
            return 0
        return _shut(sock)


def _shut(sock: socket.socket) -> int:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return 0
    return 1


def _sockets() -> Iterator[tuple[int, int]]:
    """(fd, inode) of each socket among this process's file descriptors."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISSOCK(info.st_mode):
            yield fd, info.st_ino
