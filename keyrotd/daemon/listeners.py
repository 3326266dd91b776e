"""The daemon's listeners: the public one (``server.listen``) and, with ``server.admin_listen``,
the admin one, each an :class:`~keyrotd.daemon.http_server.HttpServer` on the one event loop.

- TCP listeners speak HTTPS only (TLS 1.2+) when a TLS pair is configured; the admin unix socket
  is plain HTTP, created 0660 (set between bind and listen: no connection is taken before). A
  stale socket file from a previous run is removed first; a live one, or a path that is not a
  socket, is refused.
- ``on_bound`` runs once every listener is bound and listening (``READY=1`` waits for it): a
  client that connects from then on is queued by the kernel until the loop accepts it.
- Any listener ending (stop, failed bind) stops the others; a stop gives connections with a
  request in progress :data:`STOP_GRACE` seconds to be answered.
- A failed bind names its cause and that cause's fix: a port in use (stop that process), a low
  port without privilege (a port above 1023, or CAP_NET_BIND_SERVICE), an address of another
  machine, a socket directory that is missing or not writable.
- :meth:`Listeners.renew_tls` serves a new pair (private, checked files) on every TLS listener:
  new connections get it, open ones keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from keyrotd.config import missing_socket_directory, split_admin_listen
from keyrotd.daemon.http import App
from keyrotd.daemon.http_server import HttpServer, server_context
from keyrotd.errors import ConfigError, KeyrotdError

PUBLIC: Final = "public"
ADMIN: Final = "admin"
SOCKET_MODE: Final = 0o660
BACKLOG: Final = 1024
STOP_GRACE: Final = 0.5
"""Seconds a stop waits for the answers in progress before dropping their connections."""
RENEW_TIMEOUT: Final = 10.0

_SETTING: Final = {PUBLIC: "server.listen", ADMIN: "server.admin_listen"}


@dataclass
class Listener:
    name: str
    """``public`` or ``admin``: the ``listener`` of ``tls.*`` log events."""
    address: str
    """As configured: ``host:port`` or ``unix:/PATH``."""
    server: HttpServer
    tls: bool
    socket_id: tuple[int, int] | None = field(default=None)
    """(device, inode) of the unix socket file it bound: removed at the stop if still there."""

    @property
    def socket_path(self) -> Path | None:
        where = split_admin_listen(self.address)
        return where if isinstance(where, Path) else None


def make_listener(name: str, address: str, app: App, tls: tuple[Path, Path] | None) -> Listener:
    """A server for ``app`` on ``address``; HTTPS with ``tls`` unless a unix socket. A pair
    OpenSSL refuses raises :class:`ssl.SSLError`."""
    where = split_admin_listen(address)
    context = None if tls is None or isinstance(where, Path) else server_context(*map(str, tls))
    return Listener(name, address, HttpServer(app.handle, context), tls=context is not None)


class Listeners:
    def __init__(self, listeners: list[Listener], on_bound: Callable[[], None]) -> None:
        self.all = listeners
        self._on_bound = on_bound
        self._stopping = asyncio.Event()  # bound to the loop at its first wait

    @property
    def tls(self) -> list[Listener]:
        return [listener for listener in self.all if listener.tls]

    def check_free(self) -> None:
        """Refuse a port in use or a socket path taken (before anything is bound)."""
        for listener in self.all:
            path = listener.socket_path
            if path is None:
                host, port = split_admin_listen(listener.address)  # type: ignore[misc]
                check_port_free(host, port, listener)
            elif not path.parent.is_dir():
                raise missing_socket_directory(_SETTING[listener.name], path)
            else:
                clear_stale_socket(path, listener)

    async def serve(self) -> None:
        """Bind every listener, serve until :meth:`stop`; a failed bind is a
        :class:`KeyrotdError` (and nothing is served)."""
        try:
            for listener in self.all:
                await listener.server.start(bind(listener))
        except BaseException:
            for listener in self.all:
                listener.server.stop()
                remove_socket_file(listener)
            raise
        self._on_bound()
        await self._stopping.wait()
        for listener in self.all:
            listener.server.stop()
        stopped = asyncio.gather(*(listener.server.stopped() for listener in self.all))
        try:
            await asyncio.wait_for(stopped, STOP_GRACE)
        except TimeoutError:
            for listener in self.all:
                listener.server.abort()
        for listener in self.all:
            remove_socket_file(listener)

    def stop(self) -> None:
        """Stop every listener (on the loop's thread; before :meth:`serve` too)."""
        self._stopping.set()

    def renew_tls(self, cert: Path, key: Path, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``cert``/``key`` on every TLS listener (from a thread other than the loop's).
        OpenSSL loads the pair first: an ``ssl.SSLError`` leaves every listener on its old
        pair."""
        context = server_context(str(cert), str(key))
        for listener in self.tls:
            future = asyncio.run_coroutine_threadsafe(listener.server.use_tls(context), loop)
            future.result(RENEW_TIMEOUT)


def remove_socket_file(listener: Listener) -> None:
    """Remove the unix socket file ``listener`` bound, if it is still the one it bound."""
    path, bound = listener.socket_path, listener.socket_id
    if path is None or bound is None:
        return
    with contextlib.suppress(OSError):
        found = path.lstat()
        if (found.st_dev, found.st_ino) == bound:
            path.unlink()


def bind(listener: Listener) -> socket.socket:
    """``listener``'s socket, bound and listening (a unix socket made 0660 before it listens)."""
    path = listener.socket_path
    try:
        if path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(str(path))
                os.chmod(path, SOCKET_MODE)
                made = path.lstat()
                listener.socket_id = (made.st_dev, made.st_ino)
                sock.listen(BACKLOG)
            except BaseException:
                sock.close()
                raise
        else:
            host, port = split_admin_listen(listener.address)  # type: ignore[misc]
            family, kind, proto, _, address = socket.getaddrinfo(
                host,
                port,
                socket.AF_INET6 if ":" in host else socket.AF_INET,  # as check_port_free
                socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
            except BaseException:
                sock.close()
                raise
    except socket.gaierror as exc:
        raise cannot_listen(listener, exc.strerror or str(exc), errno.EADDRNOTAVAIL) from None
    except OSError as exc:
        raise cannot_listen(listener, exc.strerror or str(exc), exc.errno) from None
    sock.setblocking(False)
    return sock


def check_port_free(host: str, port: int, listener: Listener) -> None:
    """Refuse a port in use, even by another keyrotd (with a clear line, before anything is
    bound)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise cannot_listen(listener, exc.strerror or str(exc), exc.errno) from None


def clear_stale_socket(path: Path, listener: Listener) -> None:
    """Remove the socket file a previous run left at ``path``; refuse a live socket or any other
    kind of file there."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise cannot_listen(listener, exc.strerror or str(exc), exc.errno) from None
    if not stat.S_ISSOCK(mode):
        raise ConfigError(
            f"{_SETTING[listener.name]}: {path} exists and is not a socket",
            "remove that file or choose another socket path",
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno != errno.ECONNREFUSED:
                raise cannot_listen(listener, exc.strerror or str(exc), exc.errno) from None
        else:
            raise cannot_listen(listener, "a process is listening on it", errno.EADDRINUSE)
    path.unlink()


def cannot_listen(listener: Listener, reason: str, cause: int | None = None) -> KeyrotdError:
    """The refusal of one failed bind: its cause, and the fix for that cause."""
    return KeyrotdError(f"cannot listen on {listener.address} ({reason})", _fix(listener, cause))


def _fix(listener: Listener, cause: int | None) -> str:
    setting = _SETTING[listener.name]
    path = listener.socket_path
    if cause == errno.EADDRINUSE:
        return f"stop the process using it (another keyrotd?) or change {setting}"
    if cause == errno.EACCES and path is not None:
        return (
            f"give the daemon's user write access to {path.parent} (under systemd, "
            f"RuntimeDirectory= creates one it owns) or change {setting}"
        )
    if cause == errno.EACCES:
        return (
            f"ports below 1024 need privilege: use a port above 1023 in {setting} (e.g. behind "
            "a proxy), or grant the daemon CAP_NET_BIND_SERVICE (systemd: "
            "AmbientCapabilities=CAP_NET_BIND_SERVICE)"
        )
    if cause == errno.EADDRNOTAVAIL:
        return (
            f"the host is not an address of this machine: use one of its addresses, 0.0.0.0 or "
            f"[::] in {setting}"
        )
    if cause == errno.ENOENT and path is not None:
        return missing_socket_directory(setting, path).hint
    return f"check {setting}"
