"""One ``keyrotd run`` subprocess: start, signal and stop it, read its log, reach it over HTTP(S).

:class:`Daemon` is built by :func:`tests.support.daemon.make_daemon` or
:func:`tests.support.daemon.start_daemon` (import it from there). ``as_nobody=True`` runs it as
uid/gid 65534: the launcher imports keyrotd and its daemon as root first (the interpreter may
live under a directory only root can read), then drops privileges and calls ``keyrotd.cli.main``.
Files it must read have to be readable by nobody.
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from keyrotd.lifecycle.events import Transition

from .http import Reply, exchange
from .preload import LAUNCH_PREFIX
from .waiting import wait_for

TOKEN = "test-admin-token-4f1c0e-9d2b7a5e31c8f064"
START_TIMEOUT = 30.0
NOBODY = 65534

LAUNCHER = (
    LAUNCH_PREFIX
    + """
import ctypes, os, sys
import keyrotd.cli
import apscheduler.triggers.date, apscheduler.triggers.interval, apscheduler.executors.pool
if os.environ.pop("KEYROTD_TEST_AS_NOBODY", "") == "1":
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    # dumpable again, as a process started as nobody is (setuid cleared it)
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
sys.exit(keyrotd.cli.main(sys.argv[1:]))
"""
)


def stop_process(process: subprocess.Popen[bytes], signum: int, timeout: float) -> None:
    """Send ``signum`` and wait up to ``timeout`` seconds; SIGKILL it if it is still running (a
    test server: PostgreSQL, OpenBao)."""
    process.send_signal(signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Daemon:
    """One ``keyrotd run`` process (restartable) with its config, data directory and log file."""

    workdir: Path
    config: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    log_files: list[Path] = field(default_factory=list)
    ca_file: Path | None = None
    """Set: the daemon speaks HTTPS, verified against this CA (for 127.0.0.1)."""
    as_nobody: bool = False
    log_path: Path | None = None
    """Set: the one log file of every run (else ``daemon-N.log`` in the work directory)."""
    json_logs_only: bool = True
    """Whether every log line must be JSON (else a line that is not is kept as ``unparsed``)."""
    stop_timeout: float = 10.0

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- process -------------------------------------------------------------------------
    def start(self, wait: bool = True) -> Daemon:
        self.runs += 1
        log_file = self.log_path or self.workdir / f"daemon-{self.runs}.log"
        if log_file not in self.log_files:
            self.log_files.append(log_file)
        env = dict(self.env)
        if self.as_nobody:
            env["KEYROTD_TEST_AS_NOBODY"] = "1"
            command = [sys.executable, "-c", LAUNCHER, "--config", str(self.config), "run"]
        else:
            command = [sys.executable, "-m", "keyrotd.cli", "run", "--config", str(self.config)]
        with log_file.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def ready() -> bool:
            self.check_alive()
            try:
                return self.get("/readyz", timeout=1).status == 200
            except OSError:
                return False

        wait_for(ready, timeout, "/readyz to answer 200")

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"keyrotd exited with {self.process.returncode}:\n{self.log_text()}"
            )

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str, pause: float = 0.05
    ) -> None:
        """Poll ``condition`` until true; fail after ``timeout`` seconds or if the daemon died."""

        def alive_and_true() -> bool:
            self.check_alive()
            return condition()

        wait_for(alive_and_true, timeout, what, every=pause)

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Send ``signum`` and wait; the exit code (``kill`` on timeout, and fail)."""
        assert self.process is not None
        timeout = self.stop_timeout if timeout is None else timeout
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"keyrotd did not stop within {timeout}s") from None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no clean-up at all
        self.process.wait()

    # -- logs ----------------------------------------------------------------------------
    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.log_files if path.exists())

    def log_events(self) -> list[dict[str, Any]]:
        """Every log line, parsed (JSON objects; see ``json_logs_only``)."""
        events: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            if not line.strip() and self.json_logs_only:
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                if self.json_logs_only:
                    raise
                events.append({"unparsed": line})
        return events

    def transitions(self) -> list[Transition]:
        """Every lifecycle transition the daemon wrote, from its JSON log lines (not those it
        found in storage, ``"by": "storage"``)."""
        found = []
        for event in self.log_events():
            name = event.get("event")
            if isinstance(name, str) and name.startswith("key.") and event.get("by") != "storage":
                at = datetime.fromisoformat(str(event["at"]))
                exception = event.get("exception")
                found.append(Transition(name, str(event["kid"]), at, exception))
        return found

    # -- HTTP ----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        connection: http.client.HTTPConnection
        if self.ca_file is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        else:
            context = ssl.create_default_context(cafile=self.ca_file)
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=context
            )
        return exchange(connection, method, path, headers, body)

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> Reply:
        return self.request("GET", path, headers, timeout=timeout)

    def wait_status(self, path: str, status: int, timeout: float = 20.0) -> Reply:
        """Poll ``GET path`` until it answers ``status``; that reply."""

        def answered() -> Reply | None:
            self.check_alive()
            try:
                reply = self.get(path, timeout=1)
            except OSError:
                return None
            return reply if reply.status == status else None

        return wait_for(answered, timeout, f"GET {path} to answer {status}")

    def admin(self, method: str, path: str, token: str = TOKEN) -> Reply:
        return self.request(method, path, headers={"Authorization": f"Bearer {token}"})
