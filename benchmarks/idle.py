"""Idle cost of ``keyrotd run``: resident memory and CPU seconds over 30 s with no requests.

    python benchmarks/idle.py [--seconds 30]

The daemon runs the default policy on two keysets (RS256 and ES256, file storage, refresh every
30 s). Baseline, measured in the same run: a bare Python interpreter that imports keyrotd's
configuration and sleeps. Targets: RSS <= 80 MB, no busy polling (CPU seconds near zero).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daemon_tools import cpu_seconds, make_daemon, rss_mb

KEYSETS: list[dict[str, object]] = [
    {"name": "default", "algorithm": "RS256"},
    {"name": "es", "algorithm": "ES256"},
]


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """(RSS in MB at the end, CPU seconds spent during ``seconds``)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return rss_mb(pid), cpu_seconds(pid) - before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        daemon = make_daemon(
            Path(directory) / "keyrotd",
            keysets=KEYSETS,
            server={"refresh_interval": "30s", "jwks_max_age": "5m"},
        ).start()
        baseline = subprocess.Popen(
            [sys.executable, "-c", "import keyrotd.config, time; time.sleep(3600)"]
        )
        try:
            daemon.get("/.well-known/jwks.json")
            time.sleep(3)  # let start-up work (the spare keys) finish
            assert daemon.process is not None
            # both measured over the same 30 s
            started = time.monotonic()
            base_cpu = cpu_seconds(baseline.pid)
            rss, cpu = measure(daemon.process.pid, args.seconds)
            base_rss, base_cpu = rss_mb(baseline.pid), cpu_seconds(baseline.pid) - base_cpu
            elapsed = time.monotonic() - started
        finally:
            baseline.terminate()
            baseline.wait()
            daemon.stop()
    print(f"idle over {elapsed:.0f} s (2 keysets, refresh every 30 s):")
    print(f"  keyrotd run   RSS {rss:6.1f} MB   CPU {cpu:5.2f} s   (targets: <= 80 MB, ~0 s)")
    print(f"  bare python   RSS {base_rss:6.1f} MB   CPU {base_cpu:5.2f} s   (baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
