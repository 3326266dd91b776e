"""From a scheduled activation to its storage write: how late does ``keyrotd run`` write it?

    python benchmarks/activation_latency.py [--seconds 60]

A daemon rotates two RS256 keysets every 2 s: ``ahead`` publishes its successors 1.5 s ahead
(the activation write only flips states) and ``same`` publishes them a whole period ahead
(``publish_ahead == rotation_period``, the default shape: every activation also publishes a new
key, which must be generated — the spare key prepared beforehand keeps that off the write). For
each ``key.activated`` log line, latency = the line's timestamp (logged right after the write
returned) - the activation time it records. Baseline in the same run: a thread that sleeps until
the same kind of deadline and does a bare atomic fsynced write of a same-size document.
Target: p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from daemon_tools import make_daemon, percentile

KEYSETS: list[dict[str, object]] = [
    {"name": "ahead", "algorithm": "RS256", "rotation_period": "2s", "publish_ahead": "1.5s"},
    {"name": "same", "algorithm": "RS256", "rotation_period": "2s", "publish_ahead": "2s"},
]
for keyset in KEYSETS:  # no verifier here: jwks_max_age (0.5s) bounds the cache
    keyset["verifier_cache"] = "0.5s"


def atomic_write(path: Path, data: bytes) -> None:
    temp = path.with_suffix(".tmp")
    with temp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def baseline(directory: Path, size: int, seconds: float, period: float) -> list[float]:
    """Sleep until each deadline, write; lateness in ms."""
    late: list[float] = []
    data = os.urandom(size)
    deadline = time.time() + period
    end = time.time() + seconds
    while deadline < end:
        time.sleep(max(0.0, deadline - time.time()))
        atomic_write(directory / "baseline.json", data)
        late.append((time.time() - deadline) * 1000)
        deadline += period
    return late


def summary(label: str, values: list[float]) -> str:
    return (
        f"  {label:<26} n={len(values):3d}  p50 {percentile(values, 0.5):6.1f} ms  "
        f"p99 {percentile(values, 0.99):6.1f} ms  max {max(values):6.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        daemon = make_daemon(
            workdir / "keyrotd",
            keysets=KEYSETS,
            server={"refresh_interval": "0.5s", "jwks_max_age": "0.5s"},
            admin=False,
        ).start()
        size = (daemon.data / "same.json").stat().st_size
        result: list[float] = []
        thread = threading.Thread(
            target=lambda: result.extend(baseline(workdir, size, args.seconds, 2.0))
        )
        thread.start()
        thread.join()
        daemon.stop()
        latencies: dict[str, list[float]] = {"ahead": [], "same": []}
        for event in daemon.log_events():
            if event.get("event") == "key.activated" and "exception" not in event:
                written = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
                scheduled = datetime.fromisoformat(event["at"])
                latencies[event["keyset"]].append((written - scheduled).total_seconds() * 1000)
    print(f"scheduled activation -> storage write, {args.seconds:.0f} s, rotation every 2 s:")
    print(summary("keyrotd, successor ahead", latencies["ahead"]))
    print(summary("keyrotd, successor at once", latencies["same"]))
    print(summary("bare timer + fsynced write", result) + "   (baseline)")
    print("  target: p99 <= 50 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
