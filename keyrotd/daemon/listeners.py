"""The daemon's listeners: the public one (``server.listen``) and, with ``server.admin_listen``,
the admin one, each a granian embedded server on the one asyncio loop.

- TCP listeners speak HTTPS only (TLS 1.2+) when a TLS pair is configured; the admin unix socket
  is plain HTTP, created 0660 (granian sets the mode at bind). A stale socket file from a previous
  run is removed first; a live one, or a path that is not a socket, is refused.
- ``on_bound`` runs once every listener takes connections (``READY=1`` waits for it). granian
  calls its start-up hook before its worker listens (the worker runs on this same loop, after
  the hook), so each listener is probed from a thread until a connection to it succeeds.
- Any listener ending (stop, failed bind, dead worker) stops the others.
- A failed bind names its cause and that cause's fix: a port in use (stop that process), a low
  port without privilege (a port above 1023, or CAP_NET_BIND_SERVICE), an address of another
  machine, a socket directory that is missing or not writable.
- :meth:`Listeners.renew_tls` points the TLS listeners at a new pair of (private, checked) files
  and respawns their workers; the old worker keeps serving until the new one has started.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from granian.constants import Interfaces, SSLProtocols
from granian.log import LogLevels
from granian.server.embed import Server

from keyrotd.config import missing_socket_directory, split_admin_listen
from keyrotd.daemon.http import App
from keyrotd.errors import ConfigError, KeyrotdError

PUBLIC: Final = "public"
ADMIN: Final = "admin"
SOCKET_MODE: Final = 0o660
RESPAWN_INTERVAL: Final = 0.25
PROBE_INTERVAL: Final = 0.005
"""Seconds between two connection attempts while a listener is starting."""
"""Seconds the old worker keeps serving after the new one started, at a TLS renewal."""

_SETTING: Final = {PUBLIC: "server.listen", ADMIN: "server.admin_listen"}


@dataclass
class Listener:
    name: str
    """``public`` or ``admin``: the ``listener`` of ``tls.*`` log events."""
    address: str
    """As configured: ``host:port`` or ``unix:/PATH``."""
    server: Server
    tls: bool
    bound: bool = field(default=False)
    """granian has started it (its start-up hook ran): a later failure is not a failed bind."""
    answering: bool = field(default=False)
    """A connection to it succeeded: it takes connections."""

    @property
    def socket_path(self) -> Path | None:
        where = split_admin_listen(self.address)
        return where if isinstance(where, Path) else None


def make_listener(name: str, address: str, app: App, tls: tuple[Path, Path] | None) -> Listener:
    """A granian server for ``app`` on ``address``; HTTPS with ``tls`` unless a unix socket."""
    where = split_admin_listen(address)
    uds, (host, port) = (where, ("127.0.0.1", 0)) if isinstance(where, Path) else (None, where)
    cert, key = (None, None) if tls is None or uds is not None else tls
    server = Server(
        app,
        address=host,
        port=port,
        uds=uds,
        interface=Interfaces.ASGINL,  # raw_path: see keyrotd.daemon.http
        backlog=1024,
        log_level=LogLevels.error,
        websockets=False,
        ssl_cert=cert,
        ssl_key=key,
        ssl_protocol_min=SSLProtocols.tls12,
    )
    server.uds_permissions = SOCKET_MODE
    server.respawn_interval = RESPAWN_INTERVAL
    return Listener(name, address, server, tls=cert is not None)


class Listeners:
    def __init__(self, listeners: list[Listener], on_bound: Callable[[], None]) -> None:
        self.all = listeners
        self._on_bound = on_bound
        self._lock = threading.Lock()
        for listener in listeners:
            listener.server.on_startup(functools.partial(self._bound, listener))

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

    def _bound(self, listener: Listener) -> None:
        listener.bound = True
        threading.Thread(
            target=self._await_answer, args=(listener,), name="keyrotd-listen-probe", daemon=True
        ).start()

    def _await_answer(self, listener: Listener) -> None:
        """Probe ``listener`` until it takes a connection (granian listens only once its worker
        runs, after the hook that started this), then count it; give up when it stops."""
        while not takes_connections(listener):
            if listener.server.interrupt_signal:
                return
            time.sleep(PROBE_INTERVAL)
        with self._lock:
            listener.answering = True
            done = all(other.answering for other in self.all)
        if done:
            self._on_bound()

    async def serve(self) -> None:
        """Serve until every listener stopped; a failed bind is a :class:`KeyrotdError`."""
        results = await asyncio.gather(
            *(self._serve_one(listener) for listener in self.all), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _serve_one(self, listener: Listener) -> None:
        try:
            await listener.server.serve()
        except RuntimeError as exc:  # granian reports a failed bind as a RuntimeError
            if listener.bound:
                raise
            reason = _first_line(str(exc))
            raise cannot_listen(listener, reason, _errno_named_in(reason)) from None
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop every listener (on the loop's thread)."""
        for listener in self.all:
            if not listener.server.interrupt_signal:
                listener.server.stop()  # type: ignore[no-untyped-call]

    def renew_tls(self, cert: Path, key: Path, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``cert``/``key`` on every TLS listener (from any thread). granian checks the
        pair with OpenSSL first: an ``ssl.SSLError`` leaves every listener on its old pair."""
        for listener in self.tls:
            listener.server.build_ssl_context(cert, key, None, SSLProtocols.tls12, None, [], False)
        for listener in self.tls:
            loop.call_soon_threadsafe(listener.server.reload)


def takes_connections(listener: Listener) -> bool:
    """Whether a connection to ``listener`` succeeds now (closed at once, nothing sent)."""
    path = listener.socket_path
    target: str | tuple[str, int]
    if path is not None:
        family, target = socket.AF_UNIX, str(path)
    else:
        host, port = split_admin_listen(listener.address)  # type: ignore[misc]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
        family, target = (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(target)
        except OSError:
            return False
    return True


def check_port_free(host: str, port: int, listener: Listener) -> None:
    """Refuse a port in use, even by another keyrotd: granian binds with SO_REUSEPORT, which
    would let two daemons share one port silently."""
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


def _first_line(reason: str) -> str:
    """granian's bind error without the Rust backtrace it may carry (``RUST_BACKTRACE``)."""
    return (reason.split("Stack backtrace:")[0].strip().splitlines() or [reason])[0]


def _errno_named_in(reason: str) -> int | None:
    """The errno whose text granian's bind error carries (it gives no number)."""
    for number in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL, errno.ENOENT):
        if os.strerror(number).lower() in reason.lower():
            return number
    return None


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
