"""A real ``keyrotd run`` subprocess for the fault tests, reached over real HTTP.

``start_daemon`` writes nothing itself: give it a configuration file that sets ``server.listen``
to a port from :func:`free_port`. It waits (bounded) until the daemon answers ``/readyz`` with
200, then hands back a :class:`Daemon` whose log lines (stderr) are kept in a file.

``as_nobody=True`` runs it as uid/gid 65534: the launcher imports keyrotd and its daemon as root
first (the interpreter may live under a directory only root can read), then drops privileges and
calls ``keyrotd.cli.main``. Files it must read have to be readable by nobody.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from keyrotd.lifecycle import Transition

START_TIMEOUT = 30.0
NOBODY = 65534

LAUNCHER = """
import os, sys
import keyrotd.cli, keyrotd.cli.commands, keyrotd.daemon.service, keyrotd.storage.file
import keyrotd.daemon.http, keyrotd.daemon.admin, keyrotd.daemon.scheduling
import apscheduler.triggers.date, apscheduler.triggers.interval, apscheduler.executors.pool
import encodings.idna, json, email.utils, http.client, logging.config
if os.environ.pop("KEYROTD_TEST_AS_NOBODY", "") == "1":
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
sys.exit(keyrotd.cli.main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in self.logs().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"unparsed": line})
        return events

    def transitions(self) -> list[Transition]:
        """Every lifecycle transition the daemon wrote, from its JSON log lines."""
        found = []
        for event in self.log_events():
            name = event.get("event")
            if isinstance(name, str) and name.startswith("key."):
                at = datetime.fromisoformat(str(event["at"]))
                exception = event.get("exception")
                found.append(Transition(name, str(event["kid"]), at, exception))  # type: ignore[arg-type]
        return found

    def wait_for(
        self, condition: Callable[[], bool], timeout: float, what: str, pause: float = 0.05
    ) -> None:
        """Poll ``condition`` until true; fail after ``timeout`` seconds or if the daemon died."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited ({self.process.returncode}): {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(pause)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
                raise AssertionError("the daemon did not stop within 15s of SIGTERM") from None
        return self.process.returncode


def start_daemon(
    config: Path,
    port: int,
    *,
    log_path: Path,
    as_nobody: bool = False,
    environ: Mapping[str, str] | None = None,
    wrapper: list[str] | None = None,
    wait_ready: bool = True,
) -> Daemon:
    env = {k: v for k, v in (environ or os.environ).items() if not k.startswith("KEYROTD_")}
    if as_nobody:
        env["KEYROTD_TEST_AS_NOBODY"] = "1"
    command = [*(wrapper or []), sys.executable, "-c", LAUNCHER, "--config", str(config), "run"]
    log_file = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env
        )
    finally:
        log_file.close()
    daemon = Daemon(process, port, log_path)
    if wait_ready:
        try:
            daemon.wait_for(lambda: _ready(daemon), START_TIMEOUT, "/readyz to answer 200")
        except AssertionError as error:
            daemon.stop()
            raise AssertionError(f"{error}\n--- daemon log ---\n{daemon.logs()[-3000:]}") from None
    return daemon


def _ready(daemon: Daemon) -> bool:
    try:
        return daemon.get("/readyz").status == 200
    except OSError:
        return False
