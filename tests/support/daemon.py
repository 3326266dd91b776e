"""The one daemon launcher: ``keyrotd run`` as a real subprocess, reached over real HTTP.

- :func:`make_daemon` writes a configuration (fast policy by default) and a token file in a work
  directory; the :class:`Daemon` it returns is started with :meth:`Daemon.start` (restartable).
- :func:`start_daemon` starts a daemon on a configuration the test wrote itself (it must set
  ``server.listen`` to ``127.0.0.1:PORT`` with a port from :func:`free_port`), logging to
  ``log_path``, and waits (bounded) until ``/readyz`` answers 200.

The :class:`Daemon` itself (process, log, HTTP) is in :mod:`tests.support.process`; import it,
``TOKEN`` and ``NOBODY`` from here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from .config import render_config
from .process import NOBODY, TOKEN, Daemon

__all__ = ["NOBODY", "TOKEN", "Daemon", "free_port", "make_daemon", "start_daemon"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_daemon(
    workdir: Path,
    *,
    keysets: list[dict[str, object]] | None = None,
    server: Mapping[str, object] | None = None,
    admin: bool = True,
    log_level: str = "info",
    env: Mapping[str, str] | None = None,
    ca_file: Path | None = None,
    custody: Mapping[str, object] | None = None,
    storage: Mapping[str, object] | None = None,
) -> Daemon:
    """Write a config (fast policy by default) and a token file; the daemon is not started.
    ``storage``: settings added to the file store in ``workdir / "data"``, or another type's."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_values: dict[str, object] = {
        "listen": f"127.0.0.1:{port}",
        "refresh_interval": "1s",
        "jwks_max_age": "1s",
    }
    if admin:
        token_file = workdir / "admin.token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        server_values["admin_token_file"] = token_file
    server_values.update(server or {})
    config = workdir / "keyrotd.toml"
    other_type = (env or {}).get("KEYROTD_STORAGE__TYPE", "file") != "file"
    sections: dict[str, Mapping[str, object]] = {
        # storage.path is a file-store setting: refused beside another type
        "storage": {} if other_type and not storage else _storage(workdir, storage or {}),
        "server": server_values,
        "logging": {"format": "json", "level": log_level},
    }
    if custody is not None:
        sections["custody"] = custody
    default_keysets: list[dict[str, object]] = [
        {"name": "main", "algorithm": "ES256", "rotation_period": "1h", "publish_ahead": "1h"}
    ]
    config.write_text(render_config(sections, keysets or default_keysets))
    clean_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEYROTD_", "NOTIFY_SOCKET", "WATCHDOG_"))
    }
    clean_env.update(env or {})
    return Daemon(workdir=workdir, config=config, port=port, env=clean_env, ca_file=ca_file)


def _storage(workdir: Path, given: Mapping[str, object]) -> Mapping[str, object]:
    if given.get("type", "file") != "file":
        return given
    return {"path": workdir / "data", **given}


def start_daemon(
    config: Path,
    port: int,
    *,
    log_path: Path,
    as_nobody: bool = False,
    environ: Mapping[str, str] | None = None,
    wait_ready: bool = True,
) -> Daemon:
    """Start ``keyrotd run`` on the test's own ``config``; wait until ready unless told not to."""
    env = {k: v for k, v in (environ or os.environ).items() if not k.startswith("KEYROTD_")}
    daemon = Daemon(
        workdir=log_path.parent,
        config=config,
        port=port,
        env=env,
        as_nobody=as_nobody,
        log_path=log_path,
        json_logs_only=False,
        stop_timeout=15.0,
    )
    daemon.start(wait=False)
    if wait_ready:
        try:
            daemon.wait_ready()
        except AssertionError as error:
            daemon.stop()
            raise AssertionError(
                f"{error}\n--- daemon log ---\n{daemon.log_text()[-3000:]}"
            ) from None
    return daemon
