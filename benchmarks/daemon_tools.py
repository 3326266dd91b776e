"""Shared by the daemon benchmarks: a keyrotd subprocess, nginx on loopback, wrk, statistics.

Needs nginx and wrk for the HTTP benchmarks:  apt-get install -y nginx wrk
(only the binaries are used: each run starts its own nginx with a temp config on 127.0.0.1).
"""

from __future__ import annotations

import http.client
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.daemon import Daemon, free_port, make_daemon  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

__all__ = [
    "Daemon",
    "Nginx",
    "Wrk",
    "exported_revision",
    "free_port",
    "make_daemon",
    "percentile",
    "wait_for",
    "wrk",
]

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def require(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise SystemExit(f"{binary} is not installed: apt-get install -y nginx wrk")
    return path


def exported_revision(revision: str, directory: Path) -> dict[str, str]:
    """``revision``'s ``keyrotd/`` exported under ``directory``: the environment that runs a
    daemon from it (``PYTHONPATH``) beside this checkout's."""
    exported = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, "keyrotd"],
        capture_output=True,
        check=True,
    ).stdout
    (directory / "base.tar").write_bytes(exported)
    with tarfile.open(directory / "base.tar") as archive:
        archive.extractall(directory / "baseline", filter="data")
    return {"PYTHONPATH": str(directory / "baseline")}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class Wrk:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int

    def line(self) -> str:
        return (
            f"{self.requests_per_second:9.0f} req/s  p50 {self.p50_ms:6.2f} ms  "
            f"p99 {self.p99_ms:6.2f} ms  non-2xx/3xx+errors {self.errors}"
        )


def wrk(
    url: str,
    seconds: int = 10,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
) -> Wrk:
    """``wrk -t2 -c64 -d<seconds>s --latency`` against ``url`` (``script``: a Lua request)."""
    command = [require("wrk"), "-t2", "-c64", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    latency = {
        int(p): float(v) * _UNITS[unit]
        for p, v, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)$", out, re.MULTILINE)
    }
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    if 50 not in latency or 99 not in latency:
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    return Wrk(rate, latency[50], latency[99], errors)


def median_of(results: list[Wrk]) -> Wrk:
    return Wrk(
        statistics.median(r.requests_per_second for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


class Nginx:
    """nginx serving ``files`` (name -> bytes) on a free loopback port, from a temp prefix;
    HTTPS only (TLS 1.2+) with ``tls`` (certificate chain file, key file)."""

    def __init__(
        self,
        workdir: Path,
        files: dict[str, bytes],
        workers: str = "auto",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.scheme = "http" if tls is None else "https"
        listen = f"listen 127.0.0.1:{self.port};"
        if tls is not None:
            listen = (
                f"listen 127.0.0.1:{self.port} ssl; ssl_certificate {tls[0]}; "
                f"ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.2 TLSv1.3;"
            )
        root = workdir / "nginx-root"
        root.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (root / name).write_bytes(data)
            (root / name).chmod(0o644)
        for directory in (root, *root.parents):  # nginx workers may run as another user
            if directory == Path("/tmp") or directory == directory.parent:
                break
            directory.chmod(directory.stat().st_mode | 0o755)
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(
            f"""
worker_processes {workers};
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ application/json json; }}
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    server {{
        {listen}
        root {root};
        add_header Cache-Control "public, max-age=300";
    }}
}}
"""
        )
        self.process = subprocess.Popen(
            [require("nginx"), "-c", str(self.conf), "-p", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 10, "nginx to answer")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "http":
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        unverified = ssl._create_unverified_context()  # loopback: our own nginx, just started
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=timeout, context=unverified
        )

    def _answers(self) -> bool:
        try:
            connection = self._connection(1)
            connection.request("GET", "/")
            connection.getresponse().read()
            return True
        except OSError:
            return False

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"

    def etag(self, name: str, expected: bytes) -> str:
        """The ETag nginx gives ``name``, after checking it serves exactly ``expected``."""
        connection = self._connection(5)
        connection.request("GET", f"/{name}")
        response = connection.getresponse()
        body = response.read()
        if response.status != 200 or body != expected:
            raise SystemExit(f"nginx answers {response.status}, not the JWKS: see {self.conf}")
        return response.getheader("etag") or ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def settle(seconds: float) -> None:
    time.sleep(seconds)
