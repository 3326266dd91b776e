"""Pieces of ``scale.py``: many-keyset configs, a request-counting moto server, daemon runs.

- :func:`write_config`: a ``keyrotd.toml`` with N ES256 keysets (``ks-00000`` ...).
- :class:`CountingMotoServer`: moto's own WSGI app under werkzeug on 127.0.0.1, as
  ``ThreadedMotoServer`` runs it, wrapped in a middleware that counts every request by its
  ``X-Amz-Target`` operation and answer status (an independent count of what the daemons send).
- :class:`Run`: one ``keyrotd run`` subprocess with stdout and stderr in one file; its ready time,
  RSS, CPU, SIGTERM exit and what it printed at warning level or above while stopping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon_tools import cpu_seconds, free_port, rss_mb

from tests.support.config import render_config
from tests.support.daemon import start_daemon
from tests.support.moto import AWS_TEST_ENVIRONMENT, AWS_VARIABLES_TO_CLEAR

READY_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
WARNING_LEVELS = {"warning", "error", "critical"}
PYTHON_WARNING = re.compile(r"Warning\b|Traceback|Exception|Error\b|never awaited")

LIVE: set[Run] = set()
"""Every run not yet stopped (``scale.py`` kills them on any exit: :func:`kill_all`)."""

Operation = tuple[str, int]
"""(X-Amz-Target operation, HTTP status of the answer)."""


def keyset_names(count: int) -> list[str]:
    return [f"ks-{index:05d}" for index in range(count)]


def write_config(
    path: Path,
    count: int,
    storage: Mapping[str, object],
    server: Mapping[str, object] | None = None,
    policy: Mapping[str, object] | None = None,
) -> int:
    """Write a config with ``count`` ES256 keysets (default policy unless ``policy``); its port."""
    port = free_port()
    sections: dict[str, Mapping[str, object]] = {
        "storage": storage,
        "server": {"listen": f"127.0.0.1:{port}", **(server or {})},
        "logging": {"format": "json", "level": "info"},
    }
    keysets: list[dict[str, object]] = [
        {"name": name, "algorithm": "ES256", **(policy or {})} for name in keyset_names(count)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_config(sections, keysets))
    return port


def daemon_environment(aws: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYROTD_", "NOTIFY_SOCKET"))}
    if aws:
        for name in AWS_VARIABLES_TO_CLEAR:
            env.pop(name, None)
        env.update(AWS_TEST_ENVIRONMENT)
    return env


# -- moto, counted ---------------------------------------------------------------------------


class CountingMotoServer:
    """moto's server app on 127.0.0.1 (a free port) in a thread, counting requests per operation.

    ``ThreadedMotoServer`` builds its app inside its thread and takes no middleware, so this
    runs the same pieces it does (``DomainDispatcherApplication(create_backend_app)`` served by
    werkzeug's threaded ``make_server`` with ``MotoRequestHandler``), with the app wrapped.
    """

    def __init__(self) -> None:
        self._counts: Counter[Operation] = Counter()
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import logging

        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1", 0, self._counting(app), True, request_handler=MotoRequestHandler
        )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _counting(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            target = str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2] or "(none)"

            def recorded(status: str, headers: Any, exc_info: Any = None) -> Any:
                with self._lock:
                    self._counts[(target, int(status.split()[0]))] += 1
                return start_response(status, headers, exc_info)

            return app(environ, recorded)

        return counted

    def counts(self) -> Counter[Operation]:
        with self._lock:
            return Counter(self._counts)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


def by_operation(counts: Counter[Operation], successful_only: bool = False) -> Counter[str]:
    totals: Counter[str] = Counter()
    for (operation, status), number in counts.items():
        if not successful_only or status < 300:
            totals[operation] += number
    return totals


# -- one daemon run --------------------------------------------------------------------------


@dataclass
class Stopped:
    seconds: float
    exit_code: int | None
    """None: killed after :data:`STOP_TIMEOUT`."""
    warnings: list[str]
    """Lines at warning level or above, or Python warnings/tracebacks, printed while stopping."""


class Run:
    """One ``keyrotd run`` process on ``config``; stdout and stderr go to ``log``."""

    def __init__(self, config: Path, port: int, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.started = time.monotonic()
        self.daemon = start_daemon(config, port, log_path=log, environ=env, wait_ready=False)
        self.ready_seconds = 0.0
        LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self.daemon.process is not None
        return self.daemon.process.pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Seconds from the process start to the first ``/readyz`` 200."""
        deadline = self.started + timeout
        process = self.daemon.process
        assert process is not None
        while True:
            if process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"keyrotd exited with {process.returncode} before ready:\n{tail}")
            try:
                if self.daemon.get("/readyz", timeout=2).status == 200:
                    self.ready_seconds = time.monotonic() - self.started
                    return self.ready_seconds
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"keyrotd ({self.daemon.config}) not ready within {timeout:.0f} s: "
                    f"see {self.log}"
                )
            time.sleep(0.1)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def metric(self, name: str) -> dict[str, float]:
        """``name``'s samples from ``/metrics``, by label text (empty if it has none)."""
        text = self.daemon.get("/metrics", timeout=10).body.decode()
        samples: dict[str, float] = {}
        for match in re.finditer(
            rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.MULTILINE
        ):
            samples[match[1] or ""] = float(match[2])
        return samples

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def events_since(self, offset: int) -> Iterator[dict[str, Any]]:
        with self.log.open("rb") as log:
            log.seek(offset)
            for line in log.read().decode(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"unparsed": line}
                if isinstance(event, dict):
                    yield event

    def stop(self) -> Stopped:
        """SIGTERM; the time to exit, the exit code and the warnings printed meanwhile."""
        process = self.daemon.process
        assert process is not None
        offset = self.log_offset()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        seconds = time.monotonic() - started
        LIVE.discard(self)
        return Stopped(seconds, code, shutdown_warnings(self.events_since(offset)))

    def kill(self) -> None:
        process = self.daemon.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        LIVE.discard(self)


def shutdown_warnings(events: Iterable[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        if "unparsed" in event:
            line = str(event["unparsed"]).strip()
            if line and PYTHON_WARNING.search(line):
                found.append(line)
        elif str(event.get("level", "")).lower() in WARNING_LEVELS:
            found.append(f"{event.get('level')}: {event.get('event') or event.get('message')}")
    return found


def kill_all() -> None:
    for run in list(LIVE):
        run.kill()
