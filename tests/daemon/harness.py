"""``keyrotd run`` as a real subprocess, and a small HTTP client for it (http.client only)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TOKEN = "test-admin-token-4f1c0e"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def toml_value(value: object) -> str:
    return json.dumps(str(value)) if isinstance(value, Path) else json.dumps(value)


def render_config(
    sections: Mapping[str, Mapping[str, object]], keysets: list[dict[str, object]]
) -> str:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    for keyset in keysets:
        lines.append("[[keysets]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keyset.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


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

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    # -- process -------------------------------------------------------------------------
    def start(self, wait: bool = True) -> Daemon:
        self.runs += 1
        log_file = self.workdir / f"daemon-{self.runs}.log"
        self.log_files.append(log_file)
        with log_file.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "keyrotd.cli", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
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

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``signum`` and wait; the exit code (``kill`` on timeout, and fail)."""
        assert self.process is not None
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
        """Every log line, parsed (they are all JSON objects)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

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

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

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


def exchange(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request on ``connection``, which is closed afterwards."""
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        connection.close()


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the admin listener's ``unix:/PATH``)."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.socket_path))
        self.sock = sock


def make_daemon(
    workdir: Path,
    *,
    keysets: list[dict[str, object]] | None = None,
    server: Mapping[str, object] | None = None,
    admin: bool = True,
    log_level: str = "info",
    env: Mapping[str, str] | None = None,
    ca_file: Path | None = None,
) -> Daemon:
    """Write a config (fast policy by default) and a token file; the daemon is not started."""
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
    sections: dict[str, Mapping[str, object]] = {
        "storage": {"path": workdir / "data"},
        "server": server_values,
        "logging": {"format": "json", "level": log_level},
    }
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
